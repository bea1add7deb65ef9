"""A generated stand-in for the NYC taxi trip data the original batch job ran over."""
