"""Launch scripts: TPU VMs, GPU machines, multi-host runs and sweeps over accelerators.

Every script is a module run from the repository root, with ``--dry-run`` printing the exact
commands it would run:

    python -m launch.sweep     spread a study's grid over the devices of one machine
    python -m launch.tpu_vm    create / set up / run / fetch / delete / watch a Cloud TPU VM
    python -m launch.gpu       one multi-GPU machine, several machines (flags, SLURM or ssh)
    python -m launch.worker    the per-process entry point: jax.distributed, then the study

See launch/README.md for the walk-through from an empty Google Cloud project.
"""
