"""registrar's benchmarks (run through bench/run.sh, run-profile.sh, run-fleet.sh)."""
