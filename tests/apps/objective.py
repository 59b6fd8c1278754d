"""A Hydra app that returns its objective, as an optimizing sweeper reads it, and logs params and a metric."""

import hydra

import slurmml


@hydra.main(version_base="1.3", config_path=".", config_name="objective")
def main(cfg):
    value = (cfg.x - 2) ** 2  # best at x=2
    slurmml.log_params(batch_size=32, optimizer={"name": "sgd"}, x=cfg.x)  # x: a config value, logged too
    slurmml.log(step=0, val_loss=value + 1.0)
    if cfg.returns == "numpy":
        import numpy

        return numpy.float32(value)
    if cfg.returns == "dict":
        return {"value": value}
    return value


if __name__ == "__main__":
    main()
