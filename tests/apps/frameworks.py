"""A Hydra app that trains a tiny model with Lightning or Hugging Face's Trainer under slurmml's integrations
(framework=lightning|huggingface), slowly enough (sleep_s per step) to be signalled while it trains, and
resumes from the framework's own checkpoint when it starts again."""

import time

import hydra
import torch

import slurmml


def lightning_run(cfg) -> float:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from slurmml.integrations.lightning import SlurmmlLogger, SlurmmlRequeue, plugins, resume_checkpoint

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            time.sleep(cfg.sleep_s)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(2 * cfg.steps, 2), torch.randn(2 * cfg.steps, 1)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, logger=SlurmmlLogger(), callbacks=[SlurmmlRequeue()], plugins=plugins(),
                         log_every_n_steps=1, accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Tiny(), data, ckpt_path=resume_checkpoint())
    return float(trainer.global_step)


def huggingface_run(cfg) -> float:
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from slurmml.integrations.huggingface import SlurmmlCallback, resume_checkpoint

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 4 * cfg.steps

        def __getitem__(self, i):
            generator = torch.Generator().manual_seed(i)
            return {"input_ids": torch.randint(0, 50, (8,), generator=generator), "labels": torch.tensor(i % 2)}

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(cfg.sleep_s)

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50,
        max_position_embeddings=16))
    output = str(slurmml.run.dir / "hf")
    args = TrainingArguments(output_dir=output, max_steps=cfg.steps, logging_steps=1, save_steps=10_000,
                             per_device_train_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[Slow(), SlurmmlCallback()])
    trainer.train(resume_from_checkpoint=resume_checkpoint(output))
    return float(trainer.state.global_step)


@hydra.main(version_base="1.3", config_path=".", config_name="frameworks")
def main(cfg) -> float:
    torch.set_num_threads(1)
    return lightning_run(cfg) if cfg.framework == "lightning" else huggingface_run(cfg)


if __name__ == "__main__":
    main()
