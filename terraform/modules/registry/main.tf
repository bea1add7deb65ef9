# The worker image's repository: scanned on push, old images expired, tags immutable. A tag
# (the git revision `invoke build` gives it) always names the image first pushed under it, and
# jobs are pinned by digest (`invoke push` prints the deploy variable).

resource "aws_ecr_repository" "this" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }

  #checkov:skip=CKV_AWS_136:AES256 (AWS-owned key) suffices for a worker image that holds no secrets; a CMK adds cost and key policy upkeep.
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last ${var.keep_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.keep_images
      }
      action = { type = "expire" }
    }]
  })
}
