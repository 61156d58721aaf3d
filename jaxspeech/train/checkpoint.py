"""Complete checkpoints with orbax: train state, grain iterator state and the config.

Layout: ``WORKDIR/checkpoints/<step>/{state,data,config}``. The last ``keep`` checkpoints are
kept, plus the best one by the task's validation metric.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy

from jaxspeech.errors import JaxspeechError


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct`` (with sharding) for every array of ``tree``: a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Saves and restores ``(state, data iterator, config)`` under ``directory``."""

    def __init__(
        self, directory: str | pathlib.Path, *, keep: int, valid_metric: str, valid_mode: str
    ) -> None:
        if valid_mode not in ("min", "max"):
            raise JaxspeechError(f"task.valid_mode={valid_mode!r}; it must be 'min' or 'max'")
        metric = lambda metrics: metrics[valid_metric]
        options = ocp.CheckpointManagerOptions(
            best_fn=metric,
            best_mode=valid_mode,
            preservation_policy=policy.AnyPreservationPolicy(
                [
                    policy.LatestN(n=keep),
                    policy.BestN(
                        get_metric_fn=metric,
                        reverse=valid_mode == "min",
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            create=True,
        )
        self.directory = pathlib.Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "config")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def resolve(self, which: str) -> int:
        """``"latest"``, ``"best"`` or a step number → an existing step."""
        steps = self.manager.all_steps()
        if which == "latest":
            step = self.manager.latest_step()
        elif which == "best":
            step = self.manager.best_step()
        elif which.isdigit():
            step = int(which) if int(which) in steps else None
        else:
            raise JaxspeechError(f"checkpoint={which!r}; use best, latest or a step number")
        if step is None:
            raise JaxspeechError(
                f"no checkpoint {which!r} in {self.directory} (steps there: {sorted(steps)})"
            )
        return step

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any,
        config_json: str,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Saves asynchronously; ``metrics`` (validation) rank the checkpoint for "best"."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                config=ocp.args.JsonSave(json.loads(config_json)),
            ),
            metrics=metrics,
        )

    def restore(self, step: int, state: Any, data_iterator: Any | None = None) -> Any:
        """Restores the state (with ``state``'s shapes and shardings, which may be abstract) and,
        when given, the iterator in place; returns the restored state."""
        items = {"state": ocp.args.StandardRestore(abstract_like(state))}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items)).state

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
