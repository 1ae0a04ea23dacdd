"""Fine-tuning with PyTorch Lightning + PEFT (used by stage `train`, crescent/stages/train.py).

data.py      QA pairs -> chat-formatted, assistant-masked token batches (a LightningDataModule)
module.py    the LightningModule: a causal LM with LoRA or full fine-tuning, AdamW + warmup/cosine,
             optional logit distillation from a teacher
trainer.py   the Trainer built from `train.trainer` (`_target_`), loggers, checkpoints for resume
fit.py       one process's part: build data + model, then validate -> fit -> validate
distributed.py  several processes (DDP, FSDP, DeepSpeed): the stage is rank 0 and starts the others
students.py  distillation students, including ones derived offline from the embedded model
"""
