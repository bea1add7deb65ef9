# Plan-level behaviour of modules/network, offline against a mocked AWS provider. Subnets, route
# tables and gateways keep the mock's generated ids, distinct per instance, so wiring asserts can fail.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"] }
  }
  mock_data "aws_subnet" {
    defaults = { vpc_id = "vpc-0a1b2c3d4e5f60718" }
  }
  mock_resource "aws_vpc" {
    defaults = { id = "vpc-0fedcba9876543210" }
  }
  mock_resource "aws_security_group" {
    defaults = { id = "sg-0123456789abcdef0" }
  }
}

run "creates_public_vpc_without_nat_when_no_subnets_are_given" {
  module {
    source = "./modules/network"
  }
  command = apply

  variables {
    name = "batchspot"
  }

  assert {
    condition     = length(aws_vpc.this) == 1 && length(aws_subnet.public) == 3
    error_message = "A VPC with one public subnet per zone (3 by default) must be created."
  }
  assert {
    condition     = alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch])
    error_message = "Without a NAT gateway, instances need public addresses to reach ECR, SQS and S3."
  }
  assert {
    condition     = length(distinct(aws_subnet.public[*].availability_zone)) == 3
    error_message = "Subnets must spread over distinct zones for more Spot pools."
  }
  assert {
    condition     = aws_route.internet[0].destination_cidr_block == "0.0.0.0/0" && aws_route.internet[0].gateway_id == aws_internet_gateway.this[0].id
    error_message = "The public route table must route to the internet gateway."
  }
  assert {
    condition     = aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3[0].service_name == "com.amazonaws.us-east-1.s3"
    error_message = "S3 traffic must use the free gateway endpoint."
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.https[0].from_port == 443 && aws_vpc_security_group_egress_rule.https[0].to_port == 443
    error_message = "The created security group must allow HTTPS egress (no egress leaves jobs RUNNABLE)."
  }
  assert {
    condition     = output.security_group_ids == tolist([aws_security_group.batch[0].id]) && output.subnet_ids == tolist(aws_subnet.public[*].id)
    error_message = "Outputs must name the created subnets and security group."
  }
  assert {
    condition     = length(distinct(output.subnet_ids)) == 3 && aws_vpc_security_group_egress_rule.https[0].security_group_id == aws_security_group.batch[0].id
    error_message = "Each subnet is its own; the HTTPS egress rule belongs to the created security group."
  }
  assert {
    condition = (aws_vpc_endpoint.s3[0].route_table_ids == toset([aws_route_table.public[0].id])
      && aws_route.internet[0].route_table_id == aws_route_table.public[0].id
    && tolist([for a in aws_route_table_association.public : a.subnet_id]) == tolist(aws_subnet.public[*].id))
    error_message = "Every created subnet must use the public route table, which holds the internet route and the S3 endpoint."
  }
  assert {
    condition     = output.assign_public_ip
    error_message = "Tasks in the created public subnets need a public IP."
  }
}

run "uses_given_subnets_and_security_groups" {
  module {
    source = "./modules/network"
  }
  command = apply

  variables {
    name               = "batchspot"
    subnet_ids         = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    security_group_ids = ["sg-0cccccccccccccccc"]
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_subnet.public) == 0 && length(aws_security_group.batch) == 0
    error_message = "Nothing may be created when subnets and security groups are given."
  }
  assert {
    condition     = output.subnet_ids == var.subnet_ids && output.security_group_ids == var.security_group_ids
    error_message = "The given ids must pass through unchanged."
  }
  assert {
    condition     = output.vpc_id == "vpc-0a1b2c3d4e5f60718" && !output.assign_public_ip
    error_message = "The VPC must be the given subnets' VPC, and tasks must not ask for public IPs there."
  }
}

run "creates_security_group_in_the_given_subnets_vpc" {
  module {
    source = "./modules/network"
  }
  command = apply

  variables {
    name       = "batchspot"
    subnet_ids = ["subnet-0aaaaaaaaaaaaaaaa"]
  }

  assert {
    condition     = aws_security_group.batch[0].vpc_id == "vpc-0a1b2c3d4e5f60718"
    error_message = "The security group must live in the VPC of the given subnets."
  }
}

run "rejects_zero_zones" {
  module {
    source = "./modules/network"
  }
  command = plan

  variables {
    name     = "batchspot"
    az_count = 0
  }

  expect_failures = [var.az_count]
}
