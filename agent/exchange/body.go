package exchange

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"

	"github.com/tokenagent/tokenagent/agent/reason"
)

// ParseBody returns the id_token an exchange body carries, whatever its content type:
//
//   - a JSON object with an "id_token" string member (other members are ignored; the member
//     given twice is refused);
//   - a JSON string;
//   - a form body (`application/x-www-form-urlencoded`) with one `id_token` field, told by its
//     `=` (a JWT never holds one);
//   - otherwise the raw JWT (`text/plain`, `application/jwt`, a form post of the bare token …).
//
// Leading and trailing whitespace is ignored. The result is not checked to be a JWT: the
// verifier does that. Callers check the body's size first (MaxBody). A body that holds
// no id_token is an invalid_id_token denial.
func ParseBody(body []byte) (string, *reason.Error) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 {
		return "", reason.Newf(reason.InvalidIDToken, "the body holds no id_token")
	}
	var tok string
	switch {
	case b[0] == '{':
		t, err := idTokenFromJSONObject(b)
		if err != nil {
			return "", reason.Newf(reason.InvalidIDToken, "the JSON body is not an object with one id_token string")
		}
		tok = t
	case b[0] == '"':
		if err := json.Unmarshal(b, &tok); err != nil {
			return "", reason.Newf(reason.InvalidIDToken, "the body is not a JSON string")
		}
	case bytes.IndexByte(b, '=') >= 0:
		q, err := url.ParseQuery(string(b))
		if err != nil || len(q["id_token"]) != 1 {
			return "", reason.Newf(reason.InvalidIDToken, "the form body does not hold one id_token field")
		}
		tok = q["id_token"][0]
	default:
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", reason.Newf(reason.InvalidIDToken, "the body holds no id_token")
	}
	return tok, nil
}

var errNoIDToken = errors.New("no id_token member")

// idTokenFromJSONObject reads the "id_token" member of the JSON object b (exactly one value,
// nothing after it).
func idTokenFromJSONObject(b []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", errNoIDToken
	}
	var tok string
	found := false
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", err
		}
		key, _ := k.(string)
		if key == "id_token" {
			if found {
				return "", errors.New("id_token given twice")
			}
			found = true
			if err := dec.Decode(&tok); err != nil {
				return "", err
			}
			continue
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", err
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "", errNoIDToken
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("data after the JSON object")
	}
	if !found {
		return "", errNoIDToken
	}
	return tok, nil
}
