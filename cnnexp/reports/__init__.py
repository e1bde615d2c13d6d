"""Run reports, without JAX: reading run folders back (run_records), grouping them over seeds
(groups), `cnnexp report`'s tables and plots (report, report_plots), published baselines, and
the Make targets' sections of docs/results.md (publish)."""
