# Observability: the Prometheus rules for the local stack. Included by the top-level Makefile
# (BIN comes from there). promtool ships in Debian's `prometheus` package
# (`apt-get install -y prometheus`) or in the release tarballs on prometheus.io.

PROMTOOL ?= promtool
PROM_DIR := observability/prometheus

.PHONY: rules-test

rules-test: ## promtool: check the Prometheus config and rules, then run the rule unit tests.
	$(PROMTOOL) check config $(PROM_DIR)/prometheus.yml
	$(PROMTOOL) check rules $(PROM_DIR)/rules.yml
	$(PROMTOOL) test rules $(PROM_DIR)/rules_test.yml $(PROM_DIR)/rules_test_slow_burn.yml
