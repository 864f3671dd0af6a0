# AdaWM: `make setup` builds .venv; `make test` runs the suite on loopback-only DDS.
SHELL := /bin/bash
VENV := .venv
# Every run gets a DDS domain of its own (1..100) unless the caller picks one.
ROS_DOMAIN_ID ?= $(shell echo $$(( RANDOM % 100 + 1 )))
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID

.PHONY: setup test clean

setup:
	@bash scripts/setup.sh

test: setup
	@echo "make test: ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) ROS_AUTOMATIC_DISCOVERY_RANGE=$(ROS_AUTOMATIC_DISCOVERY_RANGE)"
	$(VENV)/bin/python -m pytest test $(PYTEST_ARGS)

clean:
	rm -rf build $(VENV)
