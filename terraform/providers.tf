provider "aws" {
  region = var.region

  # Every taggable resource carries these; the job definitions propagate them to their tasks
  # and the compute environment to its instances, so cost allocation sees the whole batch.
  default_tags {
    tags = merge({ Project = "batchspot", Stack = var.name }, var.tags)
  }
}
