#!/usr/bin/env bash
# Creates or updates the CloudWatch dashboard of a deployed stack from
# infra/dashboard.json (its ${StackName} and ${Region} filled in). Needs the
# AWS CLI and credentials for the stack's account.
#
#   infra/put-dashboard.sh [STACK] [REGION]   (default baton, the CLI's region)
set -euo pipefail
cd "$(dirname "$0")"

stack="${1:-baton}"
region="${2:-${AWS_REGION:-$(aws configure get region || true)}}"
if [ -z "$region" ]; then
  echo "error: no region: pass one or set AWS_REGION" >&2
  exit 1
fi
body=$(sed -e "s/\${StackName}/$stack/g" -e "s/\${Region}/$region/g" dashboard.json)
aws cloudwatch put-dashboard --region "$region" --dashboard-name "$stack" --dashboard-body "$body"
echo "dashboard: https://$region.console.aws.amazon.com/cloudwatch/home?region=$region#dashboards/dashboard/$stack"
