// Command kstatus prints how kstatus reads each Kubernetes object of a YAML
// stream on standard input: one JSON line per object with its kind, name,
// status (InProgress, Current, Failed, ...) and message.
//
// It only calls kstatus's Compute, from the cli-utils fork that Helm 4's
// --wait and Flux's kustomize-controller use, at the version Helm pins.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

type reading struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	decoder := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(os.Stdin), 4096)
	encoder := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: reading objects: %v\n", err)
			os.Exit(1)
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		// Unstructured's own decoding keeps integers as int64, as kstatus
		// expects of generations.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: decoding an object: %v\n", err)
			os.Exit(1)
		}
		result, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s %s: %v\n", u.GetKind(), u.GetName(), err)
			os.Exit(1)
		}
		if err := encoder.Encode(reading{u.GetKind(), u.GetName(), string(result.Status), result.Message}); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(1)
		}
	}
}
