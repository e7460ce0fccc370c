"""The life of a training run, shared by every training script: processes and device, resume
or refuse, Ctrl-C, --stop-after, a non-finite loss, periodic log lines and checkpoints, the
final save. The step itself (loss.backward(), opt.step()) stays written out in each script:

    run = Run(cfg, kind="ddpm")                    # torchrun processes, device, resume or refuse
    ...data, model, optimizer...
    start = run.attach(model, model_cfg, ema=ema, optimizer=opt, scheduler=sched, extra={...})
    with run:                                       # Ctrl-C finishes the step and saves
        for step in run.steps():                    # to --steps, or --stop-after steps
            ...the step, written out...
            run.check_finite("try a lower --lr", loss=loss)
            if run.due(cfg.log_every):
                run.log(loss=loss.item())
            if run.due(cfg.ckpt_every, last=False):
                run.save()                          # OUT/last.pt, as of this step
    if not run.completed:                           # (the run saves itself at its end and on Ctrl-C)
        return run.exit_code

Under `torchrun --nproc_per_node N` each process takes its slice of every batch
(data.batch_indices with run.rank, run.world), `run.wrap(model)` makes the
DistributedDataParallel module, and only rank 0 prints, logs, draws and saves.
"""

import argparse
import atexit
import dataclasses
import functools
import math
import os
import signal
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..cli import SEED, Parser, add_config_args, at_least, flag_of, parse_config, runtime_fields, setting, writable_folder
from ..device import pick_device, resident_memory_mib
from ..errors import MinigenError
from ..progress import progress_bar
from .checkpoint import load_checkpoint, restore, save_checkpoint
from .finetune import init_from, restart_ema
from .runlog import MetricsLog


@dataclasses.dataclass
class RunConfig:
    """The settings of a run's life, shared by every training script (their configs extend it)."""
    seed: int = setting(0, "random seed: same seed, same run", check=SEED)
    out: str = setting("runs/run", "output folder (the checkpoint goes to OUT/last.pt)", runtime=True)
    resume: bool = setting(False, "continue from OUT/last.pt with its saved settings", runtime=True)
    stop_after: int | None = setting(None, "stop after this many steps of this invocation, with a checkpoint "
                                           "(split a run into chunks)", runtime=True, check=at_least(1))
    device: str | None = setting(None, "cpu | cuda | cuda:1 | mps (default: the best available)", runtime=True)
    init_from: str | None = setting(None, "fine-tune: start from this checkpoint's weights (EMA where it has them) "
                                          "with a fresh optimizer and schedule; classes are matched by name")
    ckpt_every: int = setting(250, "save OUT/last.pt every N steps (and always at the end)", runtime=True,
                              check=at_least(1))
    log_every: int = setting(10, "append a line to OUT/metrics.jsonl every N steps", runtime=True,
                             check=at_least(1))


# Runtime settings that belong to one invocation, not to the run: never taken from the checkpoint.
INVOCATION = ("resume", "stop_after", "out", "device")

# A loss this many times its value at a run's first step (or this large, where that was below 1)
# has diverged: the weights are past saving, even while every number is still finite.
DIVERGED = 1000.0


class GracefulStop:
    """Ctrl-C asks a training loop to stop at the end of the current step (check `.asked`);
    a second Ctrl-C raises KeyboardInterrupt at once. Restores the previous handler on exit."""

    def __init__(self, say=print):
        self.asked, self.say = False, say

    def _handler(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        if self.say:
            self.say("Ctrl-C: finishing this step and saving (Ctrl-C again to stop at once)")

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
        return False


class Run:
    """One training run: `cfg` is the script's config (a RunConfig with `steps` and `batch_size`);
    `given` names the settings typed on the command line (cli.parse_config)."""

    def __init__(self, cfg, kind: str, given: set[str] = frozenset()):
        # ---- processes and device ----
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            dist.init_process_group(backend)
            if backend == "nccl":
                cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
                torch.cuda.set_device(cfg.device)
            else:
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world))
        self.main = self.rank == 0
        self.device, reason = pick_device(cfg.device)
        self.say(f"device: {reason}" + (f"; {self.world} processes ({dist.get_backend()})" if self.world > 1 else ""))

        # ---- the output folder: this run's alone, locked before any work; resume, or refuse to overwrite ----
        self.kind, self.out = kind, Path(cfg.out)
        self.ckpt_path = self.out / "last.pt"
        self.state = None
        self._made_out = not self.out.exists()
        if self.main:                               # a second run into this folder stops here, at once
            writable_folder(self.out)
            self._lock()
        if cfg.resume:
            self.state = load_checkpoint(self.ckpt_path, kind=kind)
            cfg = self._resumed(cfg, self.state["extra"]["train"], given)
        elif self.ckpt_path.exists():
            raise MinigenError(f"{self.ckpt_path} exists: pass --resume to continue that run, or --out DIR for a new one")
        self.cfg = cfg
        self.log_file = MetricsLog(self.out / "metrics.jsonl", enabled=False)
        self.step = self.start_step = 0              # steps done (inside the loop: counting the one being done)
        self.completed, self.exit_code = False, 0
        self._saved = None
        self._saved_at = None                       # the step of the last save
        self._bad = None                            # device-side record of a non-finite loss (check_finite)
        if getattr(cfg, "amp", False) and self.device.type != "cuda":
            self.say(f"note: --amp (bf16 autocast) is for CUDA; training in fp32 on {self.device.type}")

    @classmethod
    def from_command_line(cls, config_class, kind: str, argv=None, description: str | None = None) -> "Run":
        """Parse the command line into `config_class` (one flag per setting) and start the run."""
        parser = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_args(parser, config_class)
        cfg, given = parse_config(parser, config_class, argv)
        return cls(cfg, kind, given)

    def say(self, *args, **kwargs) -> None:
        """print, on the main process only, through the progress bar when there is one."""
        if self.main:
            bar = getattr(self, "bar", None)
            bar.write(" ".join(map(str, args))) if bar is not None and not bar.disable else print(*args, **kwargs)

    def _lock(self) -> None:
        """One run owns an output folder: OUT/.lock holds its process id, host and the process's
        start time. A lock whose process is gone (a crash, kill -9), or whose process id now
        belongs to another process, is taken over; a live one refuses the second run. A lock
        written on another host cannot be checked from here: the refusal says how to clear it."""
        lock = self.out / ".lock"
        me = _lock_text(os.getpid())
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid, host, *started = lock.read_text().split()
                    pid = int(pid)
                    here = host == socket.gethostname()
                    alive = not here or (pid != os.getpid() and _process_alive(pid)
                                         and (not started or started[0] == _process_start(pid)))
                except (OSError, ValueError):
                    pid, host, here, alive = "?", "?", True, False
                if alive:
                    where = f"process {pid} on {host}" if here else f"process {pid} on another host, {host}"
                    raise MinigenError(f"{self.out} is in use by another run ({where}); wait for it or pass another "
                                       f"--out; if no run uses it, delete {lock}") from None
                lock.unlink(missing_ok=True)                       # its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self._lock_file = lock
            self._release_at_exit = functools.partial(_release, lock)   # plain data: the run may go first
            atexit.register(self._release_at_exit)
            return
        raise MinigenError(f"{self.out}: could not take the folder's lock {lock}; remove it if no run uses the folder")

    def _unlock(self) -> None:
        lock = getattr(self, "_lock_file", None)
        if lock is not None:
            _release(lock)
            atexit.unregister(self._release_at_exit)           # this run's registration only
        self._lock_file = None

    def __del__(self):
        """A run refused after it took the folder (a bad setting, a missing file) gives it back
        as soon as it is dropped, not only when the process ends, and leaves no empty folder."""
        refused = getattr(self, "_lock_file", None) is not None
        self._unlock()
        if refused and self._made_out:
            try:
                self.out.rmdir()                    # only if empty
            except OSError:
                pass

    def _resumed(self, cfg, saved: dict, given: set[str]):
        """The saved settings. A runtime one (--steps, intervals, ...) may be changed on the
        command line, and the change is said; one not given keeps the run's value (a resumed
        `--steps 500` run still stops at 500). The few that belong to one invocation (--resume,
        --stop-after, --out, --device) come from the command line. A non-runtime setting given
        on the command line that differs from the saved one is refused: the checkpoint defines
        the run, and a flag must never be dropped without a word."""
        runtime = runtime_fields(type(cfg))
        for f in dataclasses.fields(cfg):
            if f.name not in runtime or f.name in INVOCATION or f.name not in saved:
                continue
            if f.name not in given:
                setattr(cfg, f.name, saved[f.name])
            elif getattr(cfg, f.name) != saved[f.name]:
                self.say(f"{flag_of(type(cfg), f.name)} {getattr(cfg, f.name)}: changed from the run's {saved[f.name]}")
        conflicts = [f"{flag_of(type(cfg), f.name)} {getattr(cfg, f.name)} (the run has {saved[f.name]})"
                     for f in dataclasses.fields(cfg) if f.name not in runtime and f.name in saved
                     and f.name in given and getattr(cfg, f.name) != saved[f.name]]
        if conflicts:
            raise MinigenError(f"--resume continues {self.ckpt_path} with its saved settings; drop "
                               + ", ".join(conflicts) + " or start a new run with another --out")
        resumed = type(cfg)(**{f.name: getattr(cfg, f.name) if f.name in runtime or f.name not in saved else saved[f.name]
                               for f in dataclasses.fields(cfg)})
        self.say(f"resuming {self.ckpt_path} at step {self.state['step']} with its saved settings")
        return resumed

    # ---- what the run saves ---------------------------------------------------------------------

    def attach(self, model, config, *, ema=None, optimizer=None, scheduler=None, others=None, extra=None,
               classes: list[str] = ()) -> int:
        """Name what every checkpoint holds (`extra` is a dict the script may update), restore it
        when resuming (or load --init-from's weights, mapping `classes` by name), and return the
        step the run starts from."""
        self._saved = dict(model=model, config=config, ema=ema, optimizer=optimizer, scheduler=scheduler,
                           others=others, extra=extra if extra is not None else {})
        if self.state is None and self.cfg.init_from:
            networks = {"model": model, **{k: v for k, v in (others or {}).items() if isinstance(v, torch.nn.Module)}}
            self._saved["extra"]["init_from"], said = init_from(self.cfg.init_from, self.kind, networks, list(classes), config)
            if ema is not None:
                restart_ema(ema, model)
            self.say(said)
        if self.main:                                # from here on the run writes into its folder
            for stale in self.out.glob(".last.pt.*.tmp"):     # left by a save that was killed
                stale.unlink(missing_ok=True)
            self.log_file = MetricsLog(self.out / "metrics.jsonl")
            # a resumed run keeps its rows up to its checkpoint; a new one starts the log afresh
            # (rows left by a run killed before its first checkpoint are not this run's)
            self.log_file.keep_until(self.state["step"] if self.state is not None else 0)
        if self.state is not None:
            self.start_step = restore(self.state, model, config, ema, optimizer, scheduler, others)
        self.step = self.start_step
        return self.start_step

    def save(self) -> Path | None:
        """Write OUT/last.pt atomically: the weights, EMA, optimizer, schedule and random state
        as of the step just done (inside the loop: the current step, once it is finished), with
        the run's settings; on the main process only."""
        self._stop_if_not_finite()                  # never save weights that a NaN loss has reached
        self._saved_at = self.step
        if not self.main:
            return None
        s = self._saved
        return save_checkpoint(self.ckpt_path, kind=self.kind, config=s["config"], model=s["model"], step=self.step,
                               ema=s["ema"], optimizer=s["optimizer"], scheduler=s["scheduler"], others=s["others"],
                               extra={"train": dataclasses.asdict(self.cfg), **s["extra"]})

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `module` under torchrun; the module itself otherwise."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    # ---- the loop -------------------------------------------------------------------------------

    def __enter__(self):
        self.end_step = self.cfg.steps if self.cfg.stop_after is None else min(self.cfg.steps, self.start_step + self.cfg.stop_after)
        self.bar = progress_bar(total=self.cfg.steps, initial=self.start_step, desc="train", disable=not self.main,
                                dynamic_ncols=True)
        self._stop = GracefulStop(say=self.say if self.main else None).__enter__()
        self._tick, self._tick_step = time.perf_counter(), self.step
        return self

    def steps(self):
        """Yield each step number (0-based); between steps, count it and stop (saving first) when
        Ctrl-C was pressed on any process; after the last, save. Periodic saves are the loop's
        own, visible `if run.due(cfg.ckpt_every, last=False): run.save()`."""
        while self.step < self.end_step:
            self.step += 1                          # the step being done counts as done inside the loop
            yield self.step - 1
            self.bar.update(1)
            asked = self._stop.asked
            if self.world > 1 and self.step % self.cfg.log_every == 0:    # every process stops at the same step
                flag = torch.tensor(float(asked), device=self.device if dist.get_backend() == "nccl" else "cpu")
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                asked = bool(flag.item())
            elif self.world > 1:
                asked = False                       # processes agree only at log steps (one sync there)
            if asked:
                self.bar.close()
                self.say(f"stopped at step {self.step}: saved {self.save()}; continue with --resume --out {self.cfg.out}")
                self.exit_code = 130
                return
        self.bar.close()
        if self._saved_at != self.step:             # the loop may have just saved this step
            self.save()
        if self.step < self.cfg.steps:
            self.say(f"stopped at step {self.step} of {self.cfg.steps} (--stop-after): saved {self.ckpt_path}; "
                     "continue with --resume")
        else:
            self.completed = True

    def __exit__(self, exc_type, exc, tb):
        self._stop.__exit__(exc_type, exc, tb)
        self.bar.close()
        if exc_type is not None:
            self._unlock()
        if exc_type is KeyboardInterrupt:           # a second Ctrl-C: the last saved checkpoint stays as it was
            self.say(f"\nstopped at once during step {self.step}; the last saved checkpoint is {self.ckpt_path}")
            self.exit_code = 130
            return True
        return False

    def due(self, every: int, last: bool = True) -> bool:
        """True every `every` steps, counting the step being done; with `last`, also at the last
        step of this invocation, and without it never at the run's final step (whose pictures
        the script draws after the loop)."""
        done = self.step
        if not every:
            return False
        return done % every == 0 or done == self.end_step if last else done % every == 0 and done < self.cfg.steps

    def check_finite(self, advice: str, **losses: torch.Tensor) -> None:
        """Note, on the device, the first step whose loss is NaN or infinite, or has diverged
        (grown past DIVERGED times its value at the invocation's first step, or past DIVERGED
        where that was below 1), and its values: no value goes to the host here, so a GPU never
        waits. The host looks at every log line and before every save, and then stops the run
        without saving: the last checkpoint stays good."""
        values = torch.stack([v.detach().float() for v in losses.values()])      # (L,)
        if self._bad is None:
            self._bad = {"flag": torch.zeros((), dtype=torch.bool, device=values.device),
                         "step": torch.zeros((), dtype=torch.long, device=values.device),
                         "values": torch.zeros_like(values), "names": list(losses), "advice": advice,
                         "first": values.abs().clamp(min=1.0)}
        bad = ~torch.isfinite(values).all() | (values.abs() > DIVERGED * self._bad["first"]).any()
        first = bad & ~self._bad["flag"]
        self._bad["step"] = torch.where(first, self.step - 1, self._bad["step"])     # the 0-based step
        self._bad["values"] = torch.where(first, values, self._bad["values"])
        self._bad["flag"] = self._bad["flag"] | bad

    def _stop_if_not_finite(self) -> None:
        if self._bad is None or not self._bad["flag"].item():                  # the one host read
            return
        self.bar.close()
        names, values = self._bad["names"], self._bad["values"].tolist()
        said = (f"loss became {values[0]:.4g}" if len(names) == 1
                else "losses became " + ", ".join(f"{k} {v:.4g}" for k, v in zip(names, values)))
        why = "" if not all(map(math.isfinite, values)) else (
            f" (more than {DIVERGED:g}x its first value, or {DIVERGED:g} where that was below 1: the run diverged)")
        raise MinigenError(f"the {said} at step {self._bad['step'].item()}{why}; stopping without saving (the last good "
                           f"checkpoint, if any, is {self.ckpt_path}); {self._bad['advice']}")

    def log(self, **metrics) -> dict:
        """One line of OUT/metrics.jsonl for the step just done, with images/s since the last line
        (and the process's memory); the same numbers on the progress bar."""
        self._stop_if_not_finite()
        now, done = time.perf_counter(), self.step
        images_per_s = (done - self._tick_step) * self.cfg.batch_size * self.world / (now - self._tick)
        self._tick, self._tick_step = now, done
        metrics = {**metrics, "images_per_s": images_per_s, "rss_mib": round(resident_memory_mib(), 1)}
        self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()
                              if k not in ("rss_mib", "grad_norm")}, refresh=False)   # the bar redraws at its own pace
        self.log_file.write(done, **metrics)
        return metrics

    def close(self) -> None:
        """Give the output folder back, and end the process group of a torchrun run."""
        self._unlock()
        if self.world > 1 and dist.is_initialized():
            dist.barrier()                          # rank 0 may still be drawing: end the group together
            dist.destroy_process_group()


def _release(lock: Path) -> None:
    """Delete the lock file if this process holds it."""
    try:
        if lock.read_text() == _lock_text(os.getpid()):
            lock.unlink()
    except OSError:
        pass


def _process_start(pid: int) -> str:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22), or "-" where
    there is no /proc: with its id it names one process, even after the id is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "-"


def _lock_text(pid: int) -> str:
    return f"{pid} {socket.gethostname()} {_process_start(pid)}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
