"""A tiny Hydra app for the data tests: reads a dataset version, writes and logs an artifact of its own."""

import os
from pathlib import Path

import hydra

import slurmml


@hydra.main(version_base="1.3", config_path=".", config_name="data")
def main(cfg) -> int:
    if cfg.node_tmp:  # what a site's prolog sets for node-local disk; the dev cluster has none
        os.environ["SLURM_TMPDIR"] = cfg.node_tmp
    folder = Path(slurmml.dataset(cfg.dataset, node_local=cfg.node_local))
    total = sum(len(path.read_bytes()) for path in sorted(folder.rglob("*")) if path.is_file())
    Path("out.txt").write_text(f"task {cfg.x} read {total} bytes\n")
    slurmml.log_artifact("out.txt", upload=True)
    slurmml.log(step=0, bytes_read=total)
    return total


if __name__ == "__main__":
    main()
