"""Learning rate per epoch for `--lr-schedule` and `--warmup-epochs`.

The rate of epoch e is a pure function of (schedule, base rate, e, the epochs recorded before e),
set at the start of every epoch: a resumed run recomputes exactly the rates an uninterrupted one
used, whatever the checkpoint's optimiser held. `plateau` reads the held-out mIoU already in the
run's history, which a resume keeps.
"""

from __future__ import annotations

import math

from exporter.errors import ExporterError

SCHEDULES = ("constant", "cosine", "exponential", "plateau")
DEFAULT_SCHEDULE = "constant"
EXPONENTIAL_DECAY = 0.9  # per epoch after warm-up
PLATEAU_FACTOR = 0.5  # halve the rate ...
PLATEAU_PATIENCE = 2  # ... after this many epochs without a better held-out mIoU
MIN_FRACTION = 0.01  # cosine ends at 1 % of the base rate, not at zero (a last epoch that learns nothing)
# After --freeze-epochs the pretrained encoder trains too, at this fraction of the scheduled rate:
# large steps would wreck the features it brings before the decoder has adapted to them.
UNFREEZE_FACTOR = 0.1


def check_schedule(name: str, warmup_epochs: int, epochs: int) -> None:
    if name not in SCHEDULES:
        raise ExporterError(f"--lr-schedule {name!r}: unknown; use one of {', '.join(SCHEDULES)}")
    if warmup_epochs < 0 or warmup_epochs >= max(epochs, 1):
        raise ExporterError(f"--warmup-epochs {warmup_epochs}: must be at least 0 and below --epochs ({epochs})")


def learning_rate(name: str, base: float, epoch: int, epochs: int, warmup_epochs: int = 0,
                  history: list[dict] | None = None, freeze_epochs: int = 0) -> float:
    """The rate of 0-based `epoch`; `history`: the per-epoch records before it (for `plateau`);
    from epoch `freeze_epochs` on (when > 0, the encoder unfrozen) times UNFREEZE_FACTOR."""
    if freeze_epochs and epoch >= freeze_epochs:
        return UNFREEZE_FACTOR * learning_rate(name, base, epoch, epochs, warmup_epochs, history)
    if epoch < warmup_epochs:  # linear ramp up to the base rate, which epoch `warmup_epochs` reaches
        return base * (epoch + 1) / (warmup_epochs + 1)
    t = epoch - warmup_epochs
    if name == "constant":
        return base
    if name == "cosine":
        span = max(epochs - warmup_epochs - 1, 1)
        return base * (MIN_FRACTION + (1 - MIN_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(t / span, 1.0))))
    if name == "exponential":
        return base * EXPONENTIAL_DECAY ** t
    if name == "plateau":
        return base * PLATEAU_FACTOR ** _plateaus(history or [], warmup_epochs, epoch)
    raise ExporterError(f"--lr-schedule {name!r}: unknown; use one of {', '.join(SCHEDULES)}")


def _plateaus(history: list[dict], warmup_epochs: int, epoch: int) -> int:
    """How many times the held-out mIoU stalled for PLATEAU_PATIENCE epochs after warm-up, before `epoch`."""
    reductions, best, waited = 0, -math.inf, 0
    for record in history:
        if not warmup_epochs < record["epoch"] <= epoch:  # record["epoch"] is 1-based
            continue
        miou = record.get("val_miou", -math.inf)
        if miou > best:
            best, waited = miou, 0
        else:
            waited += 1
            if waited >= PLATEAU_PATIENCE:
                reductions, waited = reductions + 1, 0
    return reductions
