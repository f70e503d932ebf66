"""Prefect flows, deployments and the `sdgan` CLI. Orchestration only: the work lives in stage packages."""

from flows import prefect_env

# Offline-safe Prefect defaults must be in the environment before Prefect is first imported.
prefect_env.configure()
