"""edgescope: see inside AI training runs on small Linux devices without disturbing them.

The SDK, for a training script::

    import edgescope

    with edgescope.init(name="mnist", config={"lr": 3e-4}) as run:
        for step, batch in enumerate(loader):
            loss = train_step(batch)
            edgescope.log({"loss": loss}, step=step)
        edgescope.mark("epoch done")

Records go to the device's collector when one runs, else to a trace file under
``./edgescope-runs/`` (see :mod:`edgescope.sdk._run`). Importing edgescope has no side effects.
"""

from edgescope.sdk._run import Run, finish, init, log, mark

__version__ = "0.1.0"

__all__ = ["Run", "__version__", "finish", "init", "log", "mark"]
