#!/usr/bin/env bash
# Create, start, stop, reach or delete the benchmark VM (infra/README.md). Needs the Azure CLI.
set -euo pipefail
rg=${SELFOPT_VM_RG:-selfopt-bench}
name=${SELFOPT_VM_NAME:-selfopt-bench}
location=${SELFOPT_VM_LOCATION:-westeurope}
size=${SELFOPT_VM_SIZE:-Standard_D2s_v5}
here=$(cd "$(dirname "$0")" && pwd)

case "${1:-}" in
  create)
    az group create --name "$rg" --location "$location" --output none
    az vm create --resource-group "$rg" --name "$name" --size "$size" --image Debian:debian-12:12-gen2:latest \
      --admin-username azureuser --ssh-key-values "$HOME/.ssh/id_ed25519.pub" \
      --custom-data "$here/cloud-init.yaml" --public-ip-sku Standard --output table
    ;;
  start) az vm start --resource-group "$rg" --name "$name" ;;
  stop) az vm deallocate --resource-group "$rg" --name "$name" ;;
  status) az vm get-instance-view --resource-group "$rg" --name "$name" --query "instanceView.statuses[].displayStatus" -o tsv ;;
  ssh) exec ssh "azureuser@$(az vm show -d --resource-group "$rg" --name "$name" --query publicIps -o tsv)" ;;
  delete) az group delete --name "$rg" --yes ;;
  *) echo "usage: $0 create|start|stop|status|ssh|delete" >&2; exit 2 ;;
esac
