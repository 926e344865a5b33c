"""Cluster configs (Ray cluster launcher on AWS, KubeRay RayService) and their checker (`cluster.check`)."""

__all__: list[str] = []
