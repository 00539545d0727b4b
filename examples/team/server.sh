#!/usr/bin/env bash
# The team's tracking server: MLflow on PostgreSQL, artifacts (run files, models, data snapshots) proxied by it.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:PASSWORD@db-host:5432/mlflow ./server.sh
#   ARTIFACTS=s3://bucket/mlflow MLFLOW_S3_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... ./server.sh
#   AUTH=1 ./server.sh     # users and permissions (mlflow server --app-name basic-auth; pip install 'mlflow[auth]')
#
# Needs `pip install 'nbmlops[team]'` (psycopg 3 for postgresql:// with SQLAlchemy 2.1; boto3 for s3://).
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set it to the PostgreSQL database, postgresql://USER:PASSWORD@HOST:5432/DB}"
artifacts="${ARTIFACTS:-$PWD/mlflow-artifacts}"
args=(--backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination "$artifacts" --serve-artifacts
      --host "${HOST:-0.0.0.0}" --port "${PORT:-5000}")
if [ "${AUTH:-0}" = 1 ]; then
    args+=(--app-name basic-auth)
fi
exec mlflow server "${args[@]}"
