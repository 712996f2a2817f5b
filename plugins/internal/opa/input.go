package opa

import (
	"bytes"
	"net/url"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
)

// Input is the input document of SPEC §5a: OPA-Envoy's, plus identity and time.
type Input struct {
	Attributes  Attributes          `json:"attributes"`
	ParsedPath  []string            `json:"parsed_path"`
	ParsedQuery map[string][]string `json:"parsed_query"`
	Identity    Identity            `json:"identity"`
	Time        int64               `json:"time"`
}

// Attributes are the request's attributes, as Envoy's CheckRequest names them.
type Attributes struct {
	Request struct {
		HTTP HTTP `json:"http"`
	} `json:"request"`
}

// HTTP is the HTTP request.
type HTTP struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host"`
	Scheme  string            `json:"scheme"`
	Headers map[string]string `json:"headers"`
}

// Identity is who the agent found the request to be.
type Identity struct {
	Site     string   `json:"site"`
	Kind     string   `json:"kind"`
	User     string   `json:"user"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
}

// ParsedPath splits a path into its segments, each decoded, as OPA-Envoy's parsed_path
// ("/" is [""]).
func ParsedPath(p string) []string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range segs {
		if d, err := url.PathUnescape(s); err == nil {
			segs[i] = d
		}
	}
	return segs
}

// Write writes the document as JSON into buf (reset first).
func (in *Input) Write(buf *bytes.Buffer) error {
	buf.Reset()
	return jsonv2.MarshalWrite(buf, in)
}
