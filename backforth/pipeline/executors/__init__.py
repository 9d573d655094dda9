"""Where a run's stages execute: `local.LocalExecutor` (this process, the runner's default) or
`ray.RayExecutor` (a Ray cluster through Ray Data; `method.executor_for` picks it for `runner.executor:
ray`). Both receive one stage at a time (`job.StageJob`: the stage object itself, its engines and its
store) and write the same store."""
