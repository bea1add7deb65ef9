# Either the caller's subnets and security groups, or a small VPC of public subnets. No NAT
# gateway: instances get public addresses and reach ECR, S3, SQS and CloudWatch over HTTPS
# through the internet gateway; S3 traffic takes the free gateway endpoint instead.

locals {
  create_vpc = length(var.subnet_ids) == 0
  create_sg  = length(var.security_group_ids) == 0
  vpc_id     = local.create_vpc ? aws_vpc.this[0].id : data.aws_subnet.given[0].vpc_id
}

data "aws_region" "current" {}

# Regular zones only: a Local or Wavelength Zone the account opted into ("us-east-1-bos-1a")
# sorts before "us-east-1a" and would otherwise take a subnet, where Batch's instance types are
# scarce or missing.
data "aws_availability_zones" "available" {
  count = local.create_vpc ? 1 : 0
  state = "available"

  filter {
    name   = "zone-type"
    values = ["availability-zone"]
  }

  #checkov:skip=CKV_AWS_394:Pinning zone names would make the module region-specific; the first az_count regular zones are taken by name, and a zone AWS adds gets a later letter, so the chosen set does not move.
}

data "aws_subnet" "given" {
  count = local.create_vpc ? 0 : 1
  id    = var.subnet_ids[0]
}

resource "aws_vpc" "this" {
  count = local.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.name }

  #checkov:skip=CKV2_AWS_11:VPC flow logs cost more than the batch they would watch; the instances accept no inbound traffic at all.
}

# Without rules the default security group denies everything, so nothing lands in it by accident.
resource "aws_default_security_group" "this" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${var.name}-default-deny" }
}

resource "aws_internet_gateway" "this" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  count = local.create_vpc ? var.az_count : 0

  vpc_id                  = aws_vpc.this[0].id
  availability_zone       = data.aws_availability_zones.available[0].names[count.index % length(data.aws_availability_zones.available[0].names)]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = true

  tags = { Name = "${var.name}-public-${count.index}" }

  #checkov:skip=CKV_AWS_130:Public addresses replace a NAT gateway (about 32 USD a month each); the instances' security group allows no ingress.
}

resource "aws_route_table" "public" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${var.name}-public" }
}

resource "aws_route" "internet" {
  count = local.create_vpc ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = local.create_vpc ? var.az_count : 0

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

# S3 is where most bytes go; a gateway endpoint is free and keeps that traffic off the internet.
resource "aws_vpc_endpoint" "s3" {
  count = local.create_vpc ? 1 : 0

  vpc_id            = aws_vpc.this[0].id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.public[0].id]

  tags = { Name = "${var.name}-s3" }
}

resource "aws_security_group" "batch" {
  count = local.create_sg ? 1 : 0

  name_prefix = "${var.name}-batch-"
  description = "BatchSpot workers: no inbound traffic, HTTPS out to AWS APIs, ECR and S3"
  vpc_id      = local.vpc_id

  tags = { Name = "${var.name}-batch" }

  #checkov:skip=CKV2_AWS_5:Attached to the Batch compute environments through this module's security_group_ids output, a link checkov does not follow.

  lifecycle {
    create_before_destroy = true
  }
}

# A security group without egress is a known cause of jobs stuck in RUNNABLE: the ECS agent
# cannot register and images cannot be pulled.
resource "aws_vpc_security_group_egress_rule" "https" {
  count = local.create_sg ? 1 : 0

  security_group_id = aws_security_group.batch[0].id
  description       = "HTTPS to AWS APIs (ECS, ECR, SQS, S3, CloudWatch Logs)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
