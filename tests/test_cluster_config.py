"""ray_cluster.yaml is a valid Ray cluster-launcher config of the intended shape."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


def test_cluster_config_passes_rays_own_schema():
    cfg = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(cfg))  # raises on any field Ray does not accept
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert "GPU" not in head["resources"]  # a CPU head node
    gpu = [n for n in nodes.values() if n["resources"].get("GPU")]
    assert gpu and gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] > 0  # autoscaling GPU workers
    assert any("swapstream" in c for c in cfg["setup_commands"])  # installs swapstream
    assert "." in cfg["file_mounts"].values()  # the checkout is on every node
