package opa

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenagent/tokenagent/plugins/internal/output"
)

// Decision is a policy's decision as OPA-Envoy reads a result set (SPEC §5a).
type Decision struct {
	// Allow lets the request through, with Headers set upstream.
	Allow bool
	// Status (400–599) and Reason are the denial's; Headers go on the denial's answer.
	Status int
	Reason string
	// Headers are lower-case names and their values, checked against the output rules.
	Headers map[string]string
}

// ReadDecision reads a result set as OPA-Envoy reads it (SPEC §5a): no result or false denies
// 403; true allows; an object {"allowed", "headers", "http_status", "body"} allows with headers
// or denies with its status and body.
func ReadDecision(b []byte) (Decision, error) {
	var set []map[string]json.RawMessage
	if err := json.Unmarshal(b, &set); err != nil {
		return Decision{}, fmt.Errorf("result set is not a JSON array of objects: %v", err)
	}
	if len(set) == 0 {
		return Decision{Status: 403, Reason: "the policy's decision is undefined"}, nil
	}
	raw, ok := set[0]["result"]
	if !ok {
		return Decision{Status: 403, Reason: "the policy's decision is undefined"}, nil
	}
	var allowed bool
	if err := json.Unmarshal(raw, &allowed); err == nil {
		if allowed {
			return Decision{Allow: true}, nil
		}
		return Decision{Status: 403}, nil
	}
	var obj struct {
		Allowed    *bool          `json:"allowed"`
		Headers    map[string]any `json:"headers"`
		HTTPStatus *int           `json:"http_status"`
		Body       *string        `json:"body"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Decision{}, fmt.Errorf("the decision is neither a boolean nor an object with \"allowed\": %s", output.Truncate(raw))
	}
	if obj.Allowed == nil {
		return Decision{}, errors.New(`the decision object has no boolean "allowed"`)
	}
	headers, err := readHeaders(obj.Headers)
	if err != nil {
		return Decision{}, err
	}
	if *obj.Allowed {
		return Decision{Allow: true, Headers: headers}, nil
	}
	out := Decision{Status: 403, Headers: headers}
	if obj.HTTPStatus != nil {
		if *obj.HTTPStatus < 400 || *obj.HTTPStatus > 599 {
			return Decision{}, fmt.Errorf("the decision denies with http_status %d, outside 400..599", *obj.HTTPStatus)
		}
		out.Status = *obj.HTTPStatus
	}
	if obj.Body != nil {
		out.Reason = output.Reason(*obj.Body)
	}
	return out, nil
}

// readHeaders checks a decision's headers: string values (or lists of strings, joined with ", "
// as HTTP does), names lower-cased, and the rules of ABI v1's output headers (no x-auth-*, no
// framing header, no control character).
func readHeaders(h map[string]any) (map[string]string, error) {
	if len(h) == 0 {
		return nil, nil
	}
	if len(h) > output.MaxHeaders {
		return nil, fmt.Errorf("the decision has %d headers, over %d", len(h), output.MaxHeaders)
	}
	out := make(map[string]string, len(h))
	for name, v := range h {
		var value string
		switch v := v.(type) {
		case string:
			value = v
		case []any:
			parts := make([]string, 0, len(v))
			for _, p := range v {
				s, ok := p.(string)
				if !ok {
					return nil, fmt.Errorf("header %q: values must be strings", output.Truncate([]byte(name)))
				}
				parts = append(parts, s)
			}
			value = strings.Join(parts, ", ")
		default:
			return nil, fmt.Errorf("header %q: the value must be a string or a list of strings", output.Truncate([]byte(name)))
		}
		lower := strings.ToLower(name)
		if err := output.CheckHeader("header", []byte(lower), []byte(value)); err != nil {
			return nil, err
		}
		if _, dup := out[lower]; dup {
			return nil, fmt.Errorf("header %q is given twice", lower)
		}
		out[lower] = value
	}
	return out, nil
}
