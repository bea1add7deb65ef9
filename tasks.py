"""BatchSpot's invoke tasks: a thin table; each task calls one function of ``batchspot``.

``invoke --list`` shows them all; ``invoke <task> --help`` explains each option. A task that
cannot go on says why in one sentence (``batchspot.errors``) and exits 1; ``invoke --debug
<task>`` or ``BATCHSPOT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import invoke
from invoke import Context

import batchspot.invoke_help  # noqa: F401 - float options show their value in --help


def _answered(body: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``body``, turning an error the operator can fix into ``error: <one sentence>``."""

    @functools.wraps(body)  # invoke reads the options from the wrapped signature
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except invoke.Exit:
            raise
        except Exception as error:
            from batchspot import errors, stack

            text = errors.sentence(error, stack.foreign_outputs)
            if text is None or errors.debugging():
                raise
            raise invoke.Exit(f"error: {text}", code=1) from None

    return run


def task(*args: Any, **kwargs: Any) -> Any:
    """Declare a task as invoke's ``@task`` does, answering its errors in one sentence."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return invoke.task(_answered(args[0]))
    return lambda body: invoke.task(*args, **kwargs)(_answered(body))


# --- tests and quality -------------------------------------------------------------------
# Imports are local so that `invoke --list` stays fast and sections stay independent.


def _exit_with_status(status: int) -> None:
    """Make the task fail with the checked tool's own exit status."""
    from invoke import Exit

    if status:
        raise Exit(code=status)


@task(help={"pytest_args": 'extra pytest arguments in one string, e.g. "-x -k seed"'})
def test(c: Context, pytest_args: str = "") -> None:
    """Run the unit and integration suites (integration on a moto server it starts)."""
    import shlex

    from batchspot import checks

    _exit_with_status(checks.run_tests(shlex.split(pytest_args)))


@task(
    help={
        "pytest_args": 'extra pytest arguments in one string, e.g. "-x -k queue"',
        "endpoint": "a LocalStack to use if it answers there (docker-compose publishes this)",
    }
)
def test_local(c: Context, pytest_args: str = "", endpoint: str = "http://127.0.0.1:4566") -> None:
    """Run the integration suite on LocalStack: the running one, else one started natively."""
    import shlex

    from batchspot import checks

    _exit_with_status(checks.run_tests_on_localstack(shlex.split(pytest_args), endpoint))


@task(help={"fix": "let ruff fix what it can and reformat, instead of only checking"})
def lint(c: Context, fix: bool = False) -> None:
    """Check the code with ruff's linter and formatter."""
    from batchspot import checks

    _exit_with_status(checks.run_lint(fix))


@task
def lint_infra(c: Context) -> None:
    """Check terraform/ and the Dockerfile: fmt, validate, checkov and hadolint."""
    from batchspot import linters

    _exit_with_status(linters.lint_infra())


# --- infrastructure (terraform) ----------------------------------------------------------

_TERRAFORM_HELP = {
    "var_file": "a .tfvars file (see terraform/terraform.tfvars.example)",
    "var": "name=value for one Terraform variable (JSON values typed: max_vcpus=256); repeat",
    "local_endpoint": "apply to a local emulator at this URL (e.g. moto) instead of AWS; "
    "destroy takes the deploy's by itself",
    "state_dir": "where outputs.json and stack.json (and, with --local-endpoint, the state) "
    "are kept (default: $BATCHSPOT_STATE_DIR, else .batchspot)",
}


def _terraform_args(
    var_file: str, var: list[str] | None, local_endpoint: str, state_dir: str
) -> dict[str, object]:
    """Translate the shared task options into batchspot.terraform keyword arguments."""
    from pathlib import Path

    from batchspot.terraform import parse_vars

    return {
        "var_file": var_file or None,
        "variables": parse_vars(var or []),
        "local_endpoint": local_endpoint or None,
        "state_dir": Path(state_dir) if state_dir else None,
    }


@task(iterable=["var"], help=_TERRAFORM_HELP)
def deploy(
    c: Context,
    var_file: str = "",
    var: list[str] | None = None,
    local_endpoint: str = "",
    state_dir: str = "",
) -> None:
    """Apply the Terraform stack (one apply deploys it all) and save its outputs."""
    from batchspot import terraform

    arguments = _terraform_args(var_file, var, local_endpoint, state_dir)
    outputs = terraform.deploy(**arguments)
    path = terraform.resolve_state_dir(arguments["state_dir"]) / terraform.OUTPUTS_FILE
    print(f"saved {len(outputs)} outputs to {path}: every task reads the stack from there")


@task(iterable=["var"], help=_TERRAFORM_HELP)
def plan(
    c: Context,
    var_file: str = "",
    var: list[str] | None = None,
    local_endpoint: str = "",
    state_dir: str = "",
) -> None:
    """Show what `invoke deploy` would change."""
    from batchspot import terraform

    changes = terraform.plan(**_terraform_args(var_file, var, local_endpoint, state_dir))
    print("changes pending" if changes else "no changes")


@task(iterable=["var"], help=_TERRAFORM_HELP)
def destroy(
    c: Context,
    var_file: str = "",
    var: list[str] | None = None,
    local_endpoint: str = "",
    state_dir: str = "",
) -> None:
    """Delete the stack the saved outputs name (buckets must be empty unless force_destroy)."""
    from batchspot import terraform

    print(terraform.destroy(**_terraform_args(var_file, var, local_endpoint, state_dir)).summary())


# --- image (docker) ----------------------------------------------------------------------


@task(
    help={
        "platform": "target platform of the image (Batch runs linux/amd64 unless Graviton)",
        "local_base": "build on a base made here from Debian bookworm's packages (mmdebstrap), "
        "for machines that reach no image registry",
    }
)
def build(c: Context, platform: str = "linux/amd64", local_base: bool = False) -> None:
    """Build the worker image with Docker, tagged with the git revision."""
    from batchspot import image

    print(f"built {image.build_checkout(local_base=local_base, platform=platform)}")


@task(help={"repository_url": "ECR repository (default: the stack's ecr_repository_url output)"})
def push(c: Context, repository_url: str = "") -> None:
    """Push the image built from this revision to ECR; print the digest to deploy it by."""
    from pathlib import Path

    from batchspot import image, stack

    ecr = stack.aws("ecr")
    repository_url = stack.value("ecr_repository_url", repository_url)
    image.require_repository(ecr, repository_url)  # before Docker: the cheaper thing to fix
    engine = image.engine()
    tag = image.revision_tag(Path(__file__).resolve().parent)
    pushed = image.push(engine, ecr, repository_url=repository_url, tag=tag)
    print(f"pushed {pushed.image}\ndigest {pushed.pinned}")
    print(f"to run it: invoke deploy --var {pushed.deploy_variable}")


# --- operations (seed, submit, status, logs, cost, redrive) ------------------------------
# Every name defaults to the deployed stack's outputs; the --options override them.


@task(
    help={
        "prefix": "key prefix to list in the input bucket",
        "suffix": "only keys ending in this, e.g. .csv",
        "max_count": "send at most this many messages (0: all); counted after --skip-done",
        "query": "S3 Select query every message carries (default: the worker's own)",
        "skip_done": "skip sources whose result is already in the output bucket",
        "dry_run": "list and count, print sample messages, send nothing",
        "concurrency": "batches of 10 in flight at once",
        "bucket": "input bucket (default: the stack's input_bucket)",
        "queue_url": "work queue (default: the stack's queue_url)",
        "output_bucket": "where results are, for --skip-done (default: the stack's)",
        "output_prefix": "result key prefix, for --skip-done (default: the stack's, or results/)",
        "env": "for --skip-done: KEY=VALUE as you will pass to submit --env (results made "
        "with other settings or code are not done); repeat for more",
        "job_definition": "for --skip-done: the workers' job definition (default: the stack's)",
        "listing": "take the sources from this saved `aws s3api list-objects-v2 --output json` "
        "instead of listing S3 (with --dry-run and no --skip-done: no AWS call at all)",
        "inventory": "take the sources from the S3 Inventory whose manifest.json is at this "
        "s3:// URL instead of listing S3 (the way to seed millions of objects); a folder URL "
        "ending in /: its newest delivery; latest: the newest of the stack's own inventory",
        "list_concurrency": "prefixes listed, or inventory files read, at once",
        "batch_size": "name up to this many sources in one message (1..1000; 0: one message "
        "per source): for millions of small objects",
        "batch_bytes": "with --batch-size: at most this many bytes a message (default and "
        "most: SQS's 1048576)",
    },
    iterable=["env"],
)
def seed(
    c: Context,
    prefix: str = "",
    suffix: str = "",
    max_count: int = 0,
    query: str = "",
    skip_done: bool = False,
    dry_run: bool = False,
    concurrency: int = 8,
    bucket: str = "",
    queue_url: str = "",
    output_bucket: str = "",
    output_prefix: str = "",
    env: list[str] | None = None,
    job_definition: str = "",
    listing: str = "",
    inventory: str = "",
    list_concurrency: int = 8,
    batch_size: int = 0,
    batch_bytes: int = 1_048_576,
) -> None:
    """Queue one message per S3 object under a prefix (or per batch of them); safe to re-run."""
    from pathlib import Path

    from batchspot import queued_items, stack
    from batchspot import seed as seeding
    from batchspot import submit as submitting
    from batchspot.errors import OperatorError

    recipe = (
        submitting.workers_recipe(
            stack.aws("batch"),
            stack.aws("ecr"),
            stack.value("job_definition", job_definition),
            submitting.parse_env(env or []),
        )
        if skip_done
        else seeding.DEFAULT_RECIPE
    )
    if inventory == "latest":
        inventory = stack.optional("inventory_manifests") or ""
        if not inventory:
            raise OperatorError(
                "the stack configures no inventory: deploy with --var "
                "input_inventory_frequency=Daily, or pass a manifest.json's s3:// URL"
            )
    sqs = None if dry_run else stack.aws("sqs", pool=concurrency)  # a dry run sends nothing
    queue_url = "" if dry_run else stack.value("queue_url", queue_url)
    fresh_queue = sqs is not None and queued_items.is_empty(sqs, queue_url)
    report = seeding.seed(
        None if listing and not skip_done else stack.aws("s3"),
        sqs,
        queue_url=queue_url,
        bucket=stack.value("input_bucket", bucket),
        prefix=prefix,
        suffix=suffix,
        max_count=max_count or None,
        query=query or None,
        skip_done=skip_done,
        recipe=recipe,
        output_bucket=stack.value("output_bucket", output_bucket) if skip_done else None,
        output_prefix=output_prefix
        or stack.optional("output_prefix", seeding.DEFAULT_OUTPUT_PREFIX),
        dry_run=dry_run,
        concurrency=concurrency,
        listing=Path(listing) if listing else None,
        inventory=inventory or None,
        list_concurrency=list_concurrency,
        batch_size=batch_size or None,
        batch_bytes=batch_bytes,
    )
    if sqs is not None:
        queued_items.record(queue_url, report.sent, report.items, fresh=fresh_queue)
    from worker.logs import brief

    # A batch's body may be 1 MiB: samples and failures show its start, and say what was cut.
    for sample in report.samples:
        print(brief(sample, 500))
    for failure in report.failures[:10]:
        print(f"failed: {failure.code} {failure.message}: {brief(failure.body, 200)}")
    print(report.summary())


@task(
    iterable=["env"],
    help={
        "size": "children: a number (1 = a plain job, 2..10000 = an array job) or auto",
        "per_worker": "with --size auto: queued items per child (a batch message's items "
        "count, as seed recorded them)",
        "env": "KEY=VALUE added to the container's environment; repeat for more",
        "name": "job name",
        "job_queue": "Batch job queue (default: the stack's job_queue)",
        "job_definition": "Batch job definition (default: the stack's job_definition)",
        "queue_url": "work queue whose depth sizes --size auto (default: the stack's)",
        "then": "after the array job, run this command once over all results (merged JSON "
        "lines on stdin; its JSON stored at runs/<job-id>/final.json)",
        "final": "submit the final job (manifest) after the array job, even without --then",
        "tolerate_failures": "the final job fails when more than this percentage of the items "
        "failed (-1: never)",
        "tolerate_pending": "the final job does not fail when items are still pending in the "
        "work queue (it does by default)",
        "final_job_definition": "job definition of the final step (default: the stack's "
        "final_job_definition)",
    },
)
def submit(
    c: Context,
    size: str = "auto",
    per_worker: int = 100,
    env: list[str] | None = None,
    name: str = "batchspot",
    job_queue: str = "",
    job_definition: str = "",
    queue_url: str = "",
    then: str = "",
    final: bool = False,
    tolerate_failures: float = -1.0,
    tolerate_pending: bool = False,
    final_job_definition: str = "",
) -> None:
    """Submit the workers as an array job sized from the queue (or --size), and a final job."""
    from batchspot import queued_items, stack
    from batchspot import submit as submitting

    batch = stack.aws("batch")
    job_queue = stack.value("job_queue", job_queue)
    job_definition = stack.value("job_definition", job_definition)
    if not queue_url:  # --size auto needs it; the final job is told its messages' items
        read = stack.value if size == "auto" else stack.optional
        queue_url = read("queue_url") or ""
    items_per_message = queued_items.items_per_message(queue_url) if queue_url else None
    count = submitting.resolve_size(
        size,
        sqs=stack.aws("sqs"),
        batch=batch,
        queue_url=queue_url,
        job_queue=job_queue,
        job_definition=job_definition,
        per_worker=per_worker,
        items_per_message=items_per_message or 1.0,
    )
    overrides = submitting.parse_env(env or [])
    submitting.require_image_in_ecr(batch, stack.aws("ecr"), job_definition)
    job = submitting.submit(
        batch,
        job_queue=job_queue,
        job_definition=job_definition,
        size=count,
        env=submitting.worker_overrides(batch, stack.aws("ecr"), job_definition, overrides),
        job_name=name,
        final=submitting.FinalStep(
            stack.value("final_job_definition", final_job_definition),
            command=then or None,
            tolerate_failures=None if tolerate_failures < 0 else tolerate_failures,
            tolerate_pending=tolerate_pending,
            items_per_message=items_per_message,
        )
        if then or final or tolerate_failures >= 0 or tolerate_pending
        else None,
    )
    print(job.summary())


@task(
    help={
        "job_id": "job to show (default: the newest job called --name, if any)",
        "watch": "redraw a progress bar with ETA until the job ends",
        "interval": "seconds between reads with --watch",
        "name": "job name to look for when --job-id is not given",
        "queue_url": "work queue (default: the stack's queue_url)",
        "dlq_url": "dead-letter queue (default: the stack's dlq_url)",
        "job_queue": "Batch job queue (default: the stack's job_queue)",
    }
)
def status(
    c: Context,
    job_id: str = "",
    watch: bool = False,
    interval: float = 10.0,
    name: str = "batchspot",
    queue_url: str = "",
    dlq_url: str = "",
    job_queue: str = "",
) -> None:
    """Show queue depths, dead letters and the job's children by status."""
    from functools import partial

    from batchspot import stack
    from batchspot import status as reading

    queue_url = stack.value("queue_url", queue_url)  # names first: their absence says more
    dlq_url = stack.value("dlq_url", dlq_url)
    batch = stack.aws("batch")
    read = partial(
        reading.snapshot,
        stack.aws("sqs"),
        batch,
        queue_url=queue_url,
        dlq_url=dlq_url,
        job_id=job_id or reading.latest_job(batch, stack.value("job_queue", job_queue), name),
        s3=stack.aws("s3"),
        output_bucket=stack.optional("output_bucket"),
        output_prefix=stack.optional("output_prefix", "results/"),
    )
    print((reading.watch(read, interval) if watch else read()).render())
    if stack.optional("dashboard_url"):
        print(f"dashboard: {stack.optional('dashboard_url')}")


@task(
    help={
        "job_id": "the array job whose run to report (default: the newest job called --name)",
        "download": "copy every result into this folder",
        "merge": "merge every result into this JSON-lines file (streamed, bounded memory)",
        "failed": "list the failed items with their reasons",
        "name": "job name to look for when --job-id is not given",
        "output_bucket": "where the results are (default: the stack's output_bucket)",
        "output_prefix": "result key prefix (default: the stack's, or results/)",
        "queue_url": "work queue, for the pending count (default: the stack's queue_url)",
        "job_queue": "Batch job queue (default: the stack's job_queue)",
    }
)
def results(
    c: Context,
    job_id: str = "",
    download: str = "",
    merge: str = "",
    failed: bool = False,
    name: str = "batchspot",
    output_bucket: str = "",
    output_prefix: str = "",
    queue_url: str = "",
    job_queue: str = "",
) -> None:
    """Count a run's items, write and print its manifest; fetch, merge or list failures."""
    import json
    from pathlib import Path

    from batchspot import queued_items, stack
    from batchspot import results as reading
    from worker.manifest import build_manifest

    run = reading.run_of(
        stack.aws("batch"),
        job_id=stack.job_id(job_id, job_queue, name),
        bucket=stack.value("output_bucket", output_bucket),
        output_prefix=output_prefix or stack.optional("output_prefix", "results/"),
        queue_url=stack.value("queue_url", queue_url),
    )
    manifest = build_manifest(stack.aws("s3"), stack.aws("sqs"), run)
    print(json.dumps(manifest.document(), indent=2))
    print(f"manifest: {manifest.uri}")
    print(manifest.counts.render(queued_items.items_per_message(run.queue_url)))
    if failed:
        for entry in reading.failures(stack.aws("s3"), manifest):
            print(reading.render_failure(entry))
    if download:
        count = reading.download(stack.aws("s3"), manifest, Path(download))
        print(f"downloaded {count} result object(s) to {download} (a batch is one object)")
    if merge:
        count = reading.merge_into(stack.aws("s3"), manifest, Path(merge))
        print(f"merged {count} result(s) into {merge}")


@task(
    help={
        "job_id": "job whose logs to show (default: the newest job called --name)",
        "index": "only this array child (-1: every child)",
        "follow": "keep printing new lines until the job ends",
        "name": "job name to look for when --job-id is not given",
        "log_group": "CloudWatch log group (default: the stack's log_group)",
        "job_queue": "Batch job queue (default: the stack's job_queue)",
    }
)
def logs(
    c: Context,
    job_id: str = "",
    index: int = -1,
    follow: bool = False,
    name: str = "batchspot",
    log_group: str = "",
    job_queue: str = "",
) -> None:
    """Print a job's CloudWatch Logs, all children or one, optionally following."""
    from batchspot import logs as reading
    from batchspot import stack

    reading.show_logs(
        stack.aws("batch"),
        stack.aws("logs"),
        job_id=stack.job_id(job_id, job_queue, name),
        log_group=stack.value("log_group", log_group),
        index=None if index < 0 else index,
        follow=follow,
    )


@task(
    help={
        "job_id": "finished job to price (default: the newest job called --name)",
        "chart": "PNG file for the chart (default: cost-<job id>.png in the state directory; "
        "'' for none)",
        "instance_type": "for attempts whose instance AWS has forgotten (about 1 h after)",
        "zone": "availability zone for those attempts",
        "spot_price": "Spot $/h to use instead of the price history (0: look it up)",
        "ondemand_price": "On-Demand $/h to use (0: the Pricing API, else the offline table; "
        "with --seconds the table first, so a what-if needs no AWS access)",
        "seconds": "price a hypothetical run of this many seconds instead of a job (in the "
        "stack's region, else the configured one, else us-east-1)",
        "refresh_prices": "re-fetch the offline On-Demand table from the Pricing API and stop",
        "name": "job name to look for when --job-id is not given",
        "job_queue": "Batch job queue (default: the stack's job_queue)",
        "requests": "price the job's AWS requests per million items instead, from its "
        "workers' own call counts, beside Step Functions' Distributed Map",
        "log_dir": "with --requests: read a local run's worker logs here, not CloudWatch",
        "log_group": "with --requests: CloudWatch log group (default: the stack's log_group)",
    }
)
def cost(
    c: Context,
    job_id: str = "",
    chart: str | None = None,
    instance_type: str = "",
    zone: str = "",
    spot_price: float = 0.0,
    ondemand_price: float = 0.0,
    seconds: float = 0.0,
    refresh_prices: bool = False,
    name: str = "batchspot",
    job_queue: str = "",
    requests: bool = False,
    log_dir: str = "",
    log_group: str = "",
) -> None:
    """Compare a finished job's Spot cost with On-Demand, as a table and a PNG chart."""
    from pathlib import Path

    from batchspot import cost as costing
    from batchspot import stack
    from batchspot.terraform import default_state_dir

    if requests:
        from batchspot.cost.requests import request_cost
        from batchspot.errors import OperatorError

        run = _run_log(job_id, log_dir, name, log_group, job_queue)
        try:
            print(request_cost(run.calls, run.ended_items).render())
        except ValueError as error:
            raise OperatorError(f"job {run.job_id}: {error}") from None
        return
    region = stack.optional("region")
    if refresh_prices:
        print(f"refreshed {costing.refresh_prices(stack.aws, region)} prices")
        return
    given = costing.Given(
        instance_type or None, zone or None, spot_price or None, ondemand_price or None
    )
    if seconds:
        found = "what-if"
        report = costing.what_if(stack.aws, seconds=seconds, region=region, given=given)
    else:
        found = stack.job_id(job_id, job_queue, name)
        report = costing.job_cost(stack.aws, job_id=found, region=region, given=given)
    print(report.render())
    if chart == "":
        return
    if not report.priced:
        print("chart: none, as nothing was priced")
        return
    path = Path(chart) if chart else default_state_dir() / f"cost-{found}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"chart: {costing.write_chart(report.costs, path)}")


def _run_log(job_id: str, log_dir: str, name: str, log_group: str, job_queue: str) -> Any:
    """Read a job's worker logs: a local run's log directory, else the job's CloudWatch streams."""
    from pathlib import Path

    from batchspot import report as reporting

    if log_dir:
        return reporting.from_log_dir(Path(log_dir), job_id or None)
    from batchspot import stack

    found = stack.job_id(job_id, job_queue, name)
    return reporting.from_cloudwatch(
        stack.aws("batch"), stack.aws("logs"), found, stack.value("log_group", log_group)
    )


@task(
    help={
        "job_id": "job to report (default: the newest job called --name, or in --log-dir)",
        "log_dir": "read a local run's worker logs here (e.g. .batchspot/local/logs), not "
        "CloudWatch",
        "chart": "PNG file for the picture",
        "name": "job name to look for when --job-id is not given",
        "log_group": "CloudWatch log group (default: the stack's log_group)",
        "job_queue": "Batch job queue (default: the stack's job_queue)",
    }
)
def report(
    c: Context,
    job_id: str = "",
    log_dir: str = "",
    chart: str = "report.png",
    name: str = "batchspot",
    log_group: str = "",
    job_queue: str = "",
) -> None:
    """Picture a job from its workers' logs: items over time, durations, failures, cost."""
    from pathlib import Path

    from batchspot import report as reporting

    run = _run_log(job_id, log_dir, name, log_group, job_queue)
    if log_dir:
        from batchspot.local import local_cost

        print(reporting.write_report(run, local_cost(run), Path(chart)))
        return
    from batchspot import cost as costing
    from batchspot import stack
    from batchspot.errors import OperatorError

    try:
        priced = costing.job_cost(
            stack.aws, job_id=run.job_id, region=stack.optional("region"), given=costing.Given()
        )
    except OperatorError:  # no attempt has ended yet: the picture says "not priced yet"
        priced = None
    print(reporting.write_report(run, priced, Path(chart)))


@task(
    help={
        "max_messages": "move at most this many, by hand (0: all, by SQS's move task if any)",
        "rate": "messages per second for SQS's move task (0: SQS's default)",
        "queue_url": "work queue (default: the stack's queue_url)",
        "dlq_url": "dead-letter queue (default: the stack's dlq_url)",
    }
)
def redrive(
    c: Context, max_messages: int = 0, rate: int = 0, queue_url: str = "", dlq_url: str = ""
) -> None:
    """Move dead-lettered messages back to the work queue, with counts."""
    from batchspot import redrive as redriving
    from batchspot import stack

    report = redriving.redrive(
        stack.aws("sqs", attempts=3),
        dlq_url=stack.value("dlq_url", dlq_url),
        queue_url=stack.value("queue_url", queue_url),
        max_messages=max_messages or None,
        rate_per_second=rate or None,
    )
    print(report.summary())


# --- local pipeline, chaos and benchmarks ------------------------------------------------


@task(
    help={
        "workers": "worker processes, run as the children of one array job",
        "rows": "rows in each of the twelve generated monthly taxi CSVs",
        "endpoint": "an emulator already running (moto, or LocalStack: queue and storage only); "
        "default: moto's server started for the run",
        "handler": "custom code as package.module:function (default: the built-in rows-to-json)",
        "state_dir": "where Terraform state, worker logs and copied results go",
        "name": "prefix of every resource name, so runs can share a long-lived emulator",
        "containers": "build the image and let moto's Batch run the array job and the final "
        "job as its containers (needs a Docker engine; with --endpoint, a moto started with "
        "MOTO_DOCKER_NETWORK_MODE=host)",
        "local_base": "with --containers: build on a base made here from Debian's packages "
        "(as invoke build --local-base)",
        "format": "the sample's format: csv, or parquet (typed as the TLC's own files)",
    }
)
def local(
    c: Context,
    workers: int = 4,
    rows: int = 2000,
    endpoint: str = "",
    handler: str = "",
    state_dir: str = ".batchspot/local",
    name: str = "batchspot",
    containers: bool = False,
    local_base: bool = False,
    format: str = "csv",
) -> None:
    """Run the whole pipeline on this machine: emulator, Terraform, sample data, seed, workers."""
    from pathlib import Path

    from invoke import Exit

    from batchspot.local import run_local

    run = run_local(
        workers=workers,
        rows=rows,
        endpoint=endpoint or None,
        handler=handler or None,
        state_dir=Path(state_dir).resolve(),
        name=name,
        containers=containers,
        local_base=local_base,
        fmt=format,  # type: ignore[arg-type]
    )
    print(run.summary())
    if run.failed or run.dead_lettered or any(run.worker_exit_codes):
        raise Exit("some items failed: see the worker logs above", code=1)


@task(
    optional=["warm"],
    help={
        "size_mib": "size of the generated CSV source in MiB (1024 = the 1 GiB case)",
        "warm": "untimed runs of each query first in its process (alone: 1, a worker's second "
        "item)",
        "repeat": "runs of each query per contender, in turns: medians, and the shares' spread",
    },
)
def bench_query(c: Context, size_mib: int = 1024, warm: int = 0, repeat: int = 1) -> None:
    """Compare the local engine's evaluator, fast path and 1-thread DuckDB: MB/s per vCPU, RSS."""
    import sys

    flags = (f" --warm {int(warm)}" if warm else "") + f" --repeat {int(repeat)}"  # True: 1
    c.run(f"{sys.executable} bench/query_engine.py --size-mib {int(size_mib)}{flags}", pty=False)


@task(
    help={
        "keys": "keys in each generated inventory (CSV-gzip, then Parquet), all read in a dry run",
        "sent": "of those, how many are sent to a fresh queue",
        "batch_size": "keys a message names (seed --batch-size; 1: one message per key)",
        "listing_keys": "objects under 16 prefixes listed by 1 and 16 paginators (0 skips it)",
        "latency_ms": "delay added to each call for the proxied listing and the projection",
        "endpoint": "an emulator to use (default: LocalStack started natively here)",
        "listing_emulator": "localstack, or moto: its server in the bench process, objects "
        "put straight into its backend (fast enough for 200 000 keys)",
    }
)
def bench_seed(
    c: Context,
    keys: int = 1_000_000,
    sent: int = 50_000,
    batch_size: int = 100,
    listing_keys: int = 16_000,
    latency_ms: float = 20.0,
    endpoint: str = "",
    listing_emulator: str = "localstack",
) -> None:
    """Seed from generated S3 Inventories and list in parallel: seconds, calls, peak RSS."""
    import shlex
    import sys

    endpoint_option = f" --endpoint {endpoint}" if endpoint else ""
    c.run(
        f"{sys.executable} -m bench.seed_at_scale run --keys {int(keys)} --sent {int(sent)} "
        f"--batch-size {int(batch_size)} --listing-keys {int(listing_keys)} "
        f"--latency-ms {float(latency_ms)}{endpoint_option} "
        f"--listing-emulator {shlex.quote(listing_emulator)}",
        pty=False,
    )


@task(
    help={
        "items": "CPU-bound items each run drains (the same for both)",
        "work": "hash rounds of pure-Python work per item",
    }
)
def bench_processes(c: Context, items: int = 40, work: int = 300_000) -> None:
    """WORKER_PROCESSES=1 against 2 on CPU-bound items: issue 14's 1.8x goal."""
    import sys

    c.run(
        f"{sys.executable} bench/worker_processes.py --items {int(items)} --work {int(work)}",
        pty=False,
    )


@task(
    help={
        "items": "small objects the worker drains as batch messages",
        "batch_size": "sources per batch message",
        "single_items": "small objects drained one per message, for comparison",
    }
)
def bench_batches(
    c: Context, items: int = 10_000, batch_size: int = 100, single_items: int = 1000
) -> None:
    """S3 PUTs and AWS calls per item, batches against one message per item: issue 23's goal."""
    import sys

    c.run(
        f"{sys.executable} bench/worker_batches.py --items {int(items)} "
        f"--batch-size {int(batch_size)} --single-items {int(single_items)}",
        pty=False,
    )


@task(
    help={
        "items": "good items to process (a few poison items are added on purpose)",
        "workers": "worker processes (array slots) kept running",
        "interval": "mean seconds between blows (each gap is 0.5x to 1.5x this)",
        "seed": "random seed: the same seed strikes the same way (and faults with --aws-rules)",
        "work_ms": "milliseconds the sample custom code spends on each item",
        "endpoint": "an emulator to use (default: LocalStack started natively here)",
        "aws_rules": "workers reach the emulator through the AWS rules layer (403s, faults)",
        "s3_slowdown_rate": "with --aws-rules: share of S3 requests answered 503 SlowDown",
        "sqs_throttle_rate": "with --aws-rules: share of SQS requests answered throttled",
        "visibility_entry_failure_rate": "with --aws-rules: share of visibility entries failed",
        "conditional_conflict_rate": "with --aws-rules: share of conditional writes (results) "
        "answered 409 ConditionalRequestConflict",
        "hostile": "also queue issue 11's hostile mix (bombs, blow-ups, bad output keys); "
        "checks peak RSS and writes outside the prefix",
        "batch_size": "queue the good sources as batch messages of N items (0: one each)",
    }
)
def chaos(
    c: Context,
    items: int = 1000,
    workers: int = 4,
    interval: float = 2.0,
    seed: int = 1,
    work_ms: int = 200,
    endpoint: str = "",
    aws_rules: bool = False,
    s3_slowdown_rate: str = "",
    sqs_throttle_rate: str = "",
    visibility_entry_failure_rate: str = "",
    conditional_conflict_rate: str = "",
    hostile: bool = False,
    batch_size: int = 0,
) -> None:
    """Drain a queue while workers are SIGKILLed and SIGTERMed at random; check nothing broke.

    ``--batch-size N`` queues the good sources as batch messages of N items each.

    Fault rates left out keep ChaosSettings' defaults, so they are written in one place.
    """
    import time
    from pathlib import Path

    from invoke import Exit

    from batchspot_support.chaos.driver import run_chaos
    from batchspot_support.chaos.settings import ChaosSettings

    given = {
        "s3_slowdown_rate": s3_slowdown_rate,
        "sqs_throttle_rate": sqs_throttle_rate,
        "visibility_entry_failure_rate": visibility_entry_failure_rate,
        "conditional_conflict_rate": conditional_conflict_rate,
    }
    settings = ChaosSettings(
        items=items,
        workers=workers,
        interval=interval,
        seed=seed,
        work_ms=work_ms,
        aws_rules=aws_rules,
        hostile=hostile,
        batch_size=batch_size,
        **{name: float(rate) for name, rate in given.items() if rate},
    )
    runs = Path(__file__).resolve().parent / ".batchspot" / "chaos"
    log_dir = runs / time.strftime("%Y%m%d-%H%M%S")
    report = run_chaos(settings, log_dir, endpoint or None)
    print(report.render())
    print(f"worker logs: {log_dir}")
    if not report.passed:
        raise Exit(code=1)


@task(
    help={
        "items": "items each contender processes (the same sources for both)",
        "processes": "processes per contender (equal for both)",
        "latency_ms": "comma list of delays added to every AWS call (a network's round trip)",
        "seed_objects": "objects to list and seed for the seeding figure (0 skips it)",
        "large_mib": "size of the large source for the memory figures (0 skips them)",
        "endpoint": "an emulator to use (default: LocalStack started natively here)",
    }
)
def bench(
    c: Context,
    items: int = 1000,
    processes: int = 2,
    latency_ms: str = "0,20",
    seed_objects: int = 100_000,
    large_mib: int = 1024,
    endpoint: str = "",
) -> None:
    """Benchmark the worker against the seed-style loop, seeding, and the query engine's memory."""
    import time
    from pathlib import Path

    from bench import worker_vs_loop

    out = Path(__file__).resolve().parent / ".batchspot" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    latencies = tuple(float(ms) for ms in latency_ms.split(","))
    print(
        worker_vs_loop.run_and_record(
            items, processes, latencies, seed_objects, large_mib, out, endpoint or None
        )
    )


@task(help={"job_id": "also explain why this job's children are RUNNABLE or FAILED"})
def doctor(c: Context, job_id: str = "") -> None:
    """Check everything a deploy and a run need, one ✓/✗ line each with the fix."""
    from batchspot.doctor import diagnose

    checklist = diagnose(job_id=job_id or None)
    print(checklist.render())
    if not checklist.passed:
        raise invoke.Exit("error: some needed checks failed: see the ✗ lines above", code=1)
