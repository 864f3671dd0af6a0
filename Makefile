# AdaWM: `make setup` builds .venv; `make test` runs the suite on loopback-only DDS.
SHELL := /bin/bash
VENV := .venv
# Every run gets a DDS domain of its own (1..100) unless the caller picks one; drawn once (`:=`), so the
# domain a recipe prints is the one its commands use.
ifeq ($(origin ROS_DOMAIN_ID),undefined)
ROS_DOMAIN_ID := $(shell echo $$(( RANDOM % 100 + 1 )))
endif
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID

.PHONY: setup test demo clean

setup:
	@bash scripts/setup.sh

test: setup
	@echo "make test: ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) ROS_AUTOMATIC_DISCOVERY_RANGE=$(ROS_AUTOMATIC_DISCOVERY_RANGE)"
	$(VENV)/bin/python -m pytest test $(PYTEST_ARGS)

# The main job: the embedded stack on a shift pair's new task with adaptation on, bounded in time.
DEMO_SECONDS ?= 240
demo: setup
	@echo "make demo: ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) ROS_AUTOMATIC_DISCOVERY_RANGE=$(ROS_AUTOMATIC_DISCOVERY_RANGE)"
	$(VENV)/bin/adawm demo --duration $(DEMO_SECONDS) $(DEMO_ARGS)

clean:
	rm -rf build $(VENV)
