.PHONY: run test lint format bench setup clean

# Installs what is missing, starts RabbitMQ if needed, then runs the console.
run:
	scripts/setup
	scripts/run

# The PostgreSQL of the suite's second pass: a role that may create databases (the pass
# makes and drops a database of its own). scripts/ensure-postgres makes sure of it.
TEST_POSTGRES_URL ?= postgres://labconsole:labconsole@127.0.0.1:5432/labconsole
export TEST_POSTGRES_URL
# What touches the database is run again on PostgreSQL: the tests marked `database`
# (tests/conftest.py marks them) among these, not the browser, runtime or broker-restart
# tests, nor the plays of whole exercises and workloads, nor the sockets' flow and the
# supervisor, whose database work the first pass covers and whose lifecycle, lease and
# checkpoint writes the concurrency, sweep and view tests repeat here.
POSTGRES_TESTS = -m database tests/exercises tests/test_*.py \
	--ignore=tests/exercises/test_exercise_runs.py \
	--ignore=tests/exercises/test_catalogue_runs.py \
	--ignore=tests/exercises/test_workload_patterns.py \
	--ignore=tests/exercises/test_workloads.py \
	--ignore=tests/exercises/test_ledger.py \
	--ignore=tests/exercises/test_socket_limits.py \
	--ignore=tests/exercises/test_stream.py \
	--ignore=tests/test_supervise.py

# The same preparation plus the test tools and a PostgreSQL, then the whole suite on
# SQLite and the tests that touch the database again on PostgreSQL, in three runs side by
# side (scripts/test says how they are split).
test:
	scripts/setup --dev
	.venv/bin/ruff check .
	POSTGRES_TESTS="$(POSTGRES_TESTS)" scripts/test

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
	-test -x .venv/bin/python && .venv/bin/python manage.py labcluster down
	rm -rf .venv staticfiles db.sqlite3* test-db.sqlite3* test-db-2.sqlite3* test-db-3.sqlite3* test-artifacts var
