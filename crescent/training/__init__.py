"""Fine-tuning with PyTorch Lightning + PEFT (used by stage `train`, crescent/stages/train.py).

data.py      QA pairs -> chat-formatted, assistant-masked token batches (a LightningDataModule)
module.py    the LightningModule: a causal LM with LoRA or full fine-tuning, AdamW + warmup/cosine,
             optional logit distillation from a teacher
trainer.py   the Trainer built from `train.trainer` (`_target_`), loggers, checkpoints for resume
students.py  distillation students, including ones derived offline from the embedded model
"""
