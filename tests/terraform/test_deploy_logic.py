"""batchspot.terraform's own logic, without running Terraform: variables, override, work dir."""

from __future__ import annotations

import json

import pytest

from batchspot import terraform as tf
from batchspot.errors import OperatorError
from batchspot.terraform_cli import TerraformCli, TerraformNotInstalled, installed_version

pytestmark = pytest.mark.terraform


def test_cli_vars_are_typed_like_terraform_expects():
    assert tf.parse_vars(["max_vcpus=256", 'instance_types=["c7i","m7i"]', "name=team-a"]) == {
        "max_vcpus": 256,
        "instance_types": ["c7i", "m7i"],
        "name": "team-a",
    }
    assert tf.parse_vars(["s3_query_limit="]) == {"s3_query_limit": ""}


def test_cli_vars_without_equals_are_refused():
    with pytest.raises(ValueError, match="name=value"):
        tf.parse_vars(["max_vcpus"])


def test_override_points_every_service_of_the_stack_at_the_emulator():
    text = tf.endpoint_override("http://127.0.0.1:5000")
    for service in ("batch", "ec2", "ecr", "iam", "logs", "s3", "sqs", "sts", "cloudwatch"):
        assert f'{service:<10} = "http://127.0.0.1:5000"' in text
    assert (
        "skip_credentials_validation = true" in text
        and "s3_use_path_style           = true" in text
    )


def test_local_work_dir_is_a_fresh_copy_that_keeps_its_state(tmp_path):
    workspace = tf.prepare_workspace("http://127.0.0.1:5000", tmp_path)
    work = workspace.working_dir
    assert (work / "main.tf").is_file() and (work / "modules/batch/main.tf").is_file()
    assert (work / tf.OVERRIDE_FILE).is_file() and not (work / "tests").exists()
    lock = ".terraform.lock.hcl"
    assert (work / lock).read_text() == (tf.TERRAFORM_DIR / lock).read_text(), (
        "local runs must pin the provider the committed lock pins"
    )
    (work / "terraform.tfstate").write_text("{}")
    (work / "stale.tf").write_text("# removed upstream")
    tf.prepare_workspace("http://127.0.0.1:6000", tmp_path)
    assert (work / "terraform.tfstate").read_text() == "{}"
    assert not (work / "stale.tf").exists()
    assert "127.0.0.1:6000" in (work / tf.OVERRIDE_FILE).read_text()


def test_aws_target_runs_in_the_terraform_dir_without_override(tmp_path):
    workspace = tf.prepare_workspace(None, tmp_path)
    assert workspace.working_dir == tf.TERRAFORM_DIR
    assert workspace.outputs_path == tmp_path / tf.OUTPUTS_FILE


def test_read_outputs_explains_what_to_run_when_nothing_is_deployed(tmp_path):
    with pytest.raises(FileNotFoundError, match="invoke deploy"):
        tf.read_outputs(tmp_path)


def test_a_missing_terraform_binary_is_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called terraform here
    cli = TerraformCli(tmp_path, state_dir=tmp_path)
    with pytest.raises(TerraformNotInstalled, match=r"^terraform is not installed or not on PATH"):
        cli.run("version")
    with pytest.raises(TerraformNotInstalled):
        installed_version()


def test_an_emulator_stack_keeps_its_outputs_where_every_task_reads_them(hermetic_state_dir):
    workspace = tf.prepare_workspace("http://127.0.0.1:5000", None)
    assert workspace.outputs_path == hermetic_state_dir / tf.OUTPUTS_FILE
    assert workspace.working_dir == hermetic_state_dir / "terraform"


def test_an_aws_deploy_is_refused_while_aws_endpoint_url_would_send_it_elsewhere(
    monkeypatch, hermetic_state_dir
):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:5000")
    with pytest.raises(
        OperatorError, match=r"^AWS_ENDPOINT_URL_SQS=http://127\.0\.0\.1:5000 is set\b"
    ):
        tf.deploy(stream=False)
    assert not (hermetic_state_dir / tf.STACK_FILE).exists()


def record(state_dir, endpoint):
    """The stack.json a deploy to ``endpoint`` (None: AWS) leaves."""
    target = {"endpoint": endpoint, "working_dir": str(state_dir / "terraform")}
    (state_dir / tf.STACK_FILE).write_text(json.dumps(target))
    (state_dir / tf.OUTPUTS_FILE).write_text('{"queue_url": "q"}')


def test_destroy_without_a_recorded_stack_is_refused(tmp_path):
    with pytest.raises(OperatorError, match=f"^no stack was deployed from {tmp_path} "):
        tf.destroy(state_dir=tmp_path, stream=False)


def test_destroy_aimed_at_another_emulator_is_refused_and_keeps_the_outputs(tmp_path):
    record(tmp_path, "http://127.0.0.1:5000")
    with pytest.raises(OperatorError, match=r"is on the emulator at http://127\.0\.0\.1:5000, not"):
        tf.destroy(local_endpoint="http://127.0.0.1:6000", state_dir=tmp_path, stream=False)
    assert (tmp_path / tf.OUTPUTS_FILE).is_file()


@pytest.mark.parametrize(
    ("recorded", "wanted"), [(None, "http://127.0.0.1:5000"), ("http://e", None)]
)
def test_a_deploy_to_another_kind_of_target_is_refused_in_a_used_state_dir(
    tmp_path, monkeypatch, recorded, wanted
):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    record(tmp_path, recorded)
    with pytest.raises(OperatorError, match=r"holds the stack deployed to .*: `invoke destroy` it"):
        tf.deploy(local_endpoint=wanted, state_dir=tmp_path, stream=False)
