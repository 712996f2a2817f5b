// Command server-token makes a MindTouch / CXone Server API Token (SPEC §3.2) with nothing but
// Go's standard library, prints it, or sends one request with it.
//
//	go run ./examples/clients/go KEY SECRET USER
//	go run ./examples/clients/go -url https://docs.example.com/@api/deki/users/current KEY SECRET USER
//
// USER is a decimal user id (42) or "=" and a username (=jane.doe), given as it is: the
// username is URL-encoded here. -epoch sets the token's time (Unix seconds; default now).
//
// The token is tkn_{key}_{epoch}_{user}_{sig}, where sig is the hex HMAC-SHA256 of
// "{key}_{epoch}_{user}" keyed with the UTF-8 bytes of the key's secret, and user is as it
// stands in the token (still encoded). It is valid for server_token_window (default 5 min)
// around epoch: make a new one per request, or at least every few minutes.
//
// In real code, read the secret from your secret store, not from the command line.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// ServerToken returns a Server API Token for key and secret acting as user (a decimal id, or
// "=" and a username that is URL-encoded here) made at epoch (Unix seconds).
func ServerToken(key, secret, user string, epoch int64) (string, error) {
	if !alnum(key, 64) {
		return "", errors.New("key must be 1 to 64 letters and digits")
	}
	switch {
	case len(user) > 1 && user[0] == '=':
		user = "=" + url.QueryEscape(user[1:]) // space as "+", like `tokenagent mint`
	case !digits(user, 19):
		return "", errors.New(`user must be a decimal id (1 to 19 digits) or "=" and a username`)
	}
	msg := key + "_" + strconv.FormatInt(epoch, 10) + "_" + user
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return "tkn_" + msg + "_" + hex.EncodeToString(mac.Sum(nil)), nil
}

func main() {
	epoch := flag.Int64("epoch", time.Now().Unix(), "the token's time, Unix seconds")
	target := flag.String("url", "", "send one GET request to this URL with the token in X-Deki-Token, and print the answer")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: server-token [-epoch N] [-url URL] KEY SECRET USER\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 3 {
		flag.Usage()
		os.Exit(2)
	}
	tok, err := ServerToken(flag.Arg(0), flag.Arg(1), flag.Arg(2), *epoch)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server-token:", err)
		os.Exit(2)
	}
	if *target == "" {
		fmt.Println(tok)
		return
	}
	status, body, err := get(*target, tok)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server-token:", err)
		os.Exit(1)
	}
	fmt.Printf("HTTP %d\n%s\n", status, body)
	if status/100 != 2 {
		os.Exit(1)
	}
}

// get sends GET target with the token, and returns the answer's status and body.
func get(target, tok string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Deki-Token", tok)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

func alnum(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func digits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
