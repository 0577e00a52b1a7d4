# The two commands of the README quick start. Both set up .venv first (idempotent).
CORES ?= 2
SNAKEMAKE = tools/snakemake.sh

.PHONY: setup demo test lint clean
setup:
	@bash tools/setup.sh

demo: setup  ## set up, run the whole pipeline on the demo cohort, write results/report.html
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --cores 1 --report results/report.html

test: setup  ## set up and run the test suite (unit + end-to-end workflow tests)
	@bash tools/system-deps.sh  # Debian packages for the SLURM and report tests (installs as root)
	.venv/bin/python -m pytest -ra

lint: setup  ## style and workflow checks (CI runs them): ruff lint, ruff format, snakemake --lint
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(SNAKEMAKE) --lint

clean:
	rm -rf results .snakemake
