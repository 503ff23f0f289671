"""Print Consul's /v1/health/service/<name> answer (read from stdin) the way an operator reads it."""

import json
import sys

for entry in json.load(sys.stdin):
    service = entry["Service"]
    print(f"  id       {service['ID']}")
    print(f"  name     {service['Service']}  at {service['Address']}:{service['Port']}")
    print(f"  tags     {service['Tags']}")
    print(f"  meta     {service['Meta']}")
    for check in entry["Checks"]:
        print(f"  check    {check['Name']}: {check['Status']}")
