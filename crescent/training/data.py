"""QA pairs -> supervised fine-tuning batches: a LightningDataModule over `qa.jsonl` rows.

Each row {id, question, response, ...} becomes one single-turn chat, rendered with the student's own
chat template (user: question, assistant: response; the model's `system_prompt` when configured, as
at generation time). The loss covers the assistant tokens only (the response and the template's
end-of-turn tokens); prompt tokens are labelled -100. Sequences longer than `max_length` are cut at
the end; a pair whose prompt alone fills `max_length` is dropped (counted in `stats`).

A seeded `val_fraction` of the pairs is held out for validation. The training order is a seeded
permutation per epoch (`EpochShuffle`); `DataPosition` stores how many batches of the current epoch
were consumed in Lightning's checkpoint, so a resumed run continues with the same batches an
uninterrupted run would have seen. Batches are padded to their longest row (dynamic padding).

With N training processes (DDP, FSDP, DeepSpeed) `EpochShuffle` shards each epoch's permutation
itself, DistributedSampler-style: padded to a multiple of N by wrapping around, process r takes
positions r, r+N, ..., so every process runs the same number of batches and one optimizer step
averages N micro-batches of different rows. The Trainer runs with `use_distributed_sampler=False`:
Lightning's wrapper would shard the order after the mid-epoch resume skip (a resumed process would
see other rows), and it would shard validation too; here every process scores the whole
validation set, so the validation loss is the one a single process reports.
"""

from __future__ import annotations

import math
import random

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from crescent.errors import ConfigError
from crescent.fsutil import derive_seed

IGNORE = -100  # label of tokens without loss (prompt, padding)


def require_chat_template(tokenizer, model_name: str, path: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"model '{model_name}' ({path}): its tokenizer has no chat template; fine-tuning formats "
            f"each QA pair as a chat (user: question, assistant: response), so use a chat/instruct "
            f"model or add a chat template to its tokenizer_config.json"
        )


def _messages(question: str, response: str | None, system_prompt: str | None) -> list[dict]:
    msgs = [{"role": "user", "content": question}]
    if system_prompt is not None:
        msgs.insert(0, {"role": "system", "content": system_prompt})
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def encode_pair(
    tokenizer, question: str, response: str, system_prompt: str | None, max_length: int
) -> dict | None:
    """input_ids + labels (-100 on the prompt) for one pair, or None when no answer token fits."""
    prompt = tokenizer.apply_chat_template(
        _messages(question, None, system_prompt), tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(
        _messages(question, response, system_prompt), tokenize=False
    )
    if not full.startswith(prompt):
        raise ConfigError(
            f"the chat template of {tokenizer.name_or_path} renders the prompt differently once the "
            f"assistant turn is added, so the loss mask cannot be placed; use a different model"
        )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = (p_ids + a_ids)[:max_length]
    labels = ([IGNORE] * len(p_ids) + a_ids)[:max_length]
    if all(x == IGNORE for x in labels):
        return None
    return {
        "input_ids": ids,
        "labels": labels,
        "truncated": len(p_ids) + len(a_ids) > max_length,
    }


class EncodedPairs(Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class EpochShuffle(Sampler[int]):
    """A seeded permutation per epoch (Lightning calls `set_epoch`); can start mid-epoch once;
    with `shard(rank, world)`, this process's share of it."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world = 0, 1
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world: int) -> None:
        """Serve process `rank` of `world` (called once the Trainer knows both)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.rank, self.world = int(rank), int(world)

    def resume(self, epoch: int, skip: int) -> None:
        """Skip the first `skip` indices of epoch `epoch` (they were trained before a restart)."""
        self._resume = (epoch, skip)

    def order(self, epoch: int) -> list[int]:
        """The epoch's permutation of all rows (the same in every process)."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def indices(self, epoch: int) -> list[int]:
        """This process's rows of the epoch, in order (all of them with one process)."""
        order = self.order(epoch)
        if self.world == 1:
            return order
        total = len(self) * self.world
        order = (order * math.ceil(total / self.n))[:total]  # wrap around: equal shares
        return order[self.rank :: self.world]

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self):
        # a generator: runs at the first batch, after Lightning has set the epoch
        skip = 0
        if self._resume is not None:
            epoch, n = self._resume
            self._resume = None
            skip = n if epoch == self.epoch else 0
        yield from self.indices(self.epoch)[skip:]


class DataPosition(pl.Callback):
    """Saves (epoch, batches consumed) in the checkpoint; on restore, the sampler skips those."""

    def __init__(self, sampler: EpochShuffle, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.batches = 0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # not called on a mid-epoch restart
        self.epoch, self.batches = trainer.current_epoch, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches += 1  # before the checkpoint of this batch is written (on batch end)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self.sampler.resume(self.epoch, self.batches * self.batch_size)  # of this process's share


def pad_collate(pad_id: int):
    def collate(rows: list[dict]) -> dict:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"])
            labels[i, :k] = torch.tensor(r["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "index": torch.tensor([r["index"] for r in rows])}  # fmt: skip

    return collate


class QADataModule(pl.LightningDataModule):
    """Tokenizes QA rows once (`prepare`), splits train/validation, serves padded batches."""

    def __init__(
        self,
        rows: list[dict],
        tokenizer,
        *,
        max_length: int,
        val_fraction: float,
        batch_size: int,
        seed: int,
        system_prompt: str | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        self.rows, self.tokenizer = rows, tokenizer
        self.max_length, self.val_fraction = int(max_length), float(val_fraction)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.system_prompt, self.num_workers = system_prompt, int(num_workers)
        self.train_set = self.val_set = None
        self.sampler: EpochShuffle | None = None
        self.stats: dict = {}
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id

    def prepare(self) -> None:
        """Encode and split (idempotent; called by the stage before the Trainer exists)."""
        if self.train_set is not None:
            return
        items, dropped, truncated = [], [], 0
        for i, r in enumerate(self.rows):
            enc = encode_pair(
                self.tokenizer, r["question"], r["response"], self.system_prompt, self.max_length
            )
            if enc is None:
                dropped.append(r.get("id", i))
                continue
            truncated += enc.pop("truncated")
            items.append({**enc, "index": i})
        if not items:
            raise ConfigError(
                f"train.max_length={self.max_length}: no QA pair has an answer token within "
                f"{self.max_length} tokens (the prompts alone are longer); raise train.max_length"
            )
        order = list(range(len(items)))
        random.Random(derive_seed(self.seed, "val_split")).shuffle(order)
        n_val = round(len(items) * self.val_fraction) if self.val_fraction > 0 else 0
        n_val = min(max(n_val, 1 if self.val_fraction > 0 else 0), len(items) - 1)
        val_idx = set(order[:n_val])
        self.train_set = EncodedPairs([x for j, x in enumerate(items) if j not in val_idx])
        self.val_set = EncodedPairs([x for j, x in enumerate(items) if j in val_idx])
        self.sampler = EpochShuffle(len(self.train_set), derive_seed(self.seed, "train_order"))
        lengths = [len(x["input_ids"]) for x in items]
        self.stats = {
            "rows": len(self.rows),
            "train_rows": len(self.train_set),
            "val_rows": len(self.val_set),
            "truncated_rows": truncated,
            "dropped_rows": len(dropped),
            "mean_tokens": round(sum(lengths) / len(lengths), 1),
            "max_tokens": max(lengths),
            "supervised_tokens": sum(sum(1 for t in x["labels"] if t != IGNORE) for x in items),
        }

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def position_callback(self) -> DataPosition:
        self.prepare()
        return DataPosition(self.sampler, self.batch_size)

    def _loader(self, data, sampler=None) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=pad_collate(self.pad_id),
            num_workers=self.num_workers,
            # its own generator: creating an iterator then leaves the global RNG (dropout) alone,
            # so a resumed run draws the same dropout masks as an uninterrupted one
            generator=torch.Generator().manual_seed(derive_seed(self.seed, "loader")),
        )

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None:  # under a Trainer: this process's share (all of it with one)
            self.sampler.shard(self.trainer.global_rank, self.trainer.world_size)
        return self._loader(self.train_set, self.sampler)

    def val_dataloader(self):
        return self._loader(self.val_set) if len(self.val_set) else []
