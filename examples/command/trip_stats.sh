#!/bin/sh
# Summarise taxi trips: the non-Python way to plug custom code into the worker.
#
#   HANDLER_COMMAND="sh examples/command/trip_stats.sh" ROWS_FORMAT=csv
#
# Reads `SELECT *` rows of the 2018 yellow-taxi layout as CSV on stdin (S3 Select's CSV output
# has no header line; one is skipped if present) and prints one JSON object on stdout: the same
# summary as examples/handlers/trip_stats.py. Plain POSIX sh + awk, so it runs in the
# python:3.11-slim worker image (mawk; no jq there). Fields are split on commas, which is right
# for this data set: none of its fields is ever quoted.
#
# Columns: 4 passenger_count, 5 trip_distance, 11 fare_amount, 17 total_amount.
# Amounts are summed as integer hundredths so the totals are exact, as in the Python handler.
exec awk -F, '
function hundredths(v) { return int(v * 100 + (v < 0 ? -0.5 : 0.5)) }
{ sub(/\r$/, "") }
NF == 0 || $1 == "VendorID" { next }
{
    trips++
    passengers += $4
    miles += hundredths($5)
    fare += hundredths($11)
    total += hundredths($17)
}
END {
    mean = trips ? sprintf("%.3f", miles / trips / 100) : "null"
    printf "{\"trips\": %d, \"passengers\": %d, ", trips, passengers
    printf "\"total_distance\": %.2f, \"mean_distance\": %s, ", miles / 100, mean
    printf "\"total_fare\": %.2f, \"total_amount\": %.2f}\n", fare / 100, total / 100
}'
