// Command promql-metrics prints the metric names PromQL expressions read:
// for each line of standard input, a JSON string holding one expression, one
// line of output, a JSON array of the names its selectors match by name.
//
// It only calls Prometheus' own parser (ExtractSelectors), at the version
// promtool is built from, so a test compares what dashboards and alerts
// read with what the operator serves without parsing PromQL itself.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	promql := parser.NewParser(parser.Options{})
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	encoder := json.NewEncoder(os.Stdout)
	for scanner.Scan() {
		var expression string
		if err := json.Unmarshal(scanner.Bytes(), &expression); err != nil {
			fail("a line is not a JSON string: %v", err)
		}
		parsed, err := promql.ParseExpr(expression)
		if err != nil {
			fail("%q: %v", expression, err)
		}
		names := map[string]bool{}
		for _, matchers := range parser.ExtractSelectors(parsed) {
			for _, matcher := range matchers {
				if matcher.Name == labels.MetricName && matcher.Type == labels.MatchEqual {
					names[matcher.Value] = true
				}
			}
		}
		sorted := make([]string, 0, len(names))
		for name := range names {
			sorted = append(sorted, name)
		}
		sort.Strings(sorted)
		if err := encoder.Encode(sorted); err != nil {
			fail("%v", err)
		}
	}
	if err := scanner.Err(); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "promql-metrics: "+format+"\n", args...)
	os.Exit(1)
}
