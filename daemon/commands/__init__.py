"""One module per command of the command line: `backfill`, `import_files` (`import`),
`replay`, `report` (with `report_plot`, the plot's panels), `status`, `copy_store`
(`copy-store`). `run`, the live daemon, is `daemon.live.service`."""
