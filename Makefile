.PHONY: run test lint format bench setup clean

# Installs what is missing, starts RabbitMQ if needed, then runs the console.
run:
	scripts/setup
	scripts/run

# The same preparation plus the test tools, then the whole suite.
test:
	scripts/setup --dev
	.venv/bin/ruff check .
	.venv/bin/pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench:
	scripts/setup --dev
	.venv/bin/python benchmarks/run.py

clean:
	rm -rf .venv staticfiles db.sqlite3* test-db.sqlite3* test-artifacts
