# Plan-level behaviour of modules/registry, offline against a mocked AWS provider.

mock_provider "aws" {
  mock_resource "aws_ecr_repository" {
    defaults = {
      arn            = "arn:aws:ecr:us-east-1:123456789012:repository/batchspot"
      repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot"
    }
  }
}

run "repository_scans_on_push_and_keeps_the_last_images" {
  module {
    source = "./modules/registry"
  }
  command = apply

  variables {
    name        = "batchspot"
    keep_images = 7
  }

  assert {
    condition     = one(aws_ecr_repository.this.image_scanning_configuration).scan_on_push
    error_message = "Images must be scanned on push."
  }
  assert {
    condition     = aws_ecr_repository.this.image_tag_mutability == "IMMUTABLE"
    error_message = "Tags must be immutable: a revision tag may never be moved to another image."
  }
  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.this.policy).rules[0].selection.countNumber == 7
    error_message = "The lifecycle policy must keep exactly keep_images images."
  }
}
