"""Prefect flows, deployments and the `sdgan` CLI. Orchestration only: the work lives in stage packages."""
