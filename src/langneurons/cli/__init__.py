"""The command line: one module per command (`commands` lists them), the options they share in `options`, the
entry point in `main`."""
