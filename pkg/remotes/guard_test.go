package remotes

import (
	"errors"
	"net/http"
	"testing"
)

type okTransport struct{ calls int }

func (o *okTransport) RoundTrip(*http.Request) (*http.Response, error) {
	o.calls++
	return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
}

func TestSchemeGuard(t *testing.T) {
	cases := []struct {
		url       string
		plainHTTP bool
		allowed   bool
	}{
		{"https://registry.example/v2/", false, true},
		{"http://registry.example/v2/", false, false},
		{"http://10.1.2.3:5000/v2/", false, false},
		{"http://192.168.1.1/v2/", false, false},
		{"http://10.1.2.3:5000/v2/", true, true},
		{"http://127.0.0.1:5000/v2/", false, true},
		{"http://127.8.9.10/v2/", false, true},
		{"http://localhost:5000/v2/", false, true},
		{"http://[::1]:5000/v2/", false, true},
	}
	for _, tc := range cases {
		inner := &okTransport{}
		g := &schemeGuard{inner: inner, plainHTTP: tc.plainHTTP}
		req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
		_, err := g.RoundTrip(req)
		if tc.allowed != (err == nil) || tc.allowed != (inner.calls == 1) {
			t.Errorf("%s plainHTTP=%v: err %v, calls %d", tc.url, tc.plainHTTP, err, inner.calls)
		}
		if !tc.allowed && !errors.Is(err, errPlainHTTP) {
			t.Errorf("%s: error %v does not wrap errPlainHTTP", tc.url, err)
		}
	}
}

func TestSchemeGuardForcesHTTP(t *testing.T) {
	var got []string
	inner := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		got = append(got, req.URL.String())
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
	})
	g := &schemeGuard{inner: inner, httpHost: "127.0.0.1:5000"}
	for _, u := range []string{"https://127.0.0.1:5000/v2/", "https://other.example/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if _, err := g.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if req.URL.String() != u {
			t.Errorf("the caller's request was modified: %s", req.URL)
		}
	}
	want := []string{"http://127.0.0.1:5000/v2/", "https://other.example/v2/"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("sent %v, want %v", got, want)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1": true, "127.1.2.3:80": true,
		"[::1]:5000": true, "::1": true, "10.0.0.1": false, "registry.example": false,
		"localhost.example.com": false, "[::2]:5000": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "https://user:pw@storage.example/blob?X-Amz-Signature=abc&token=xyz", nil)
	if got := redactURL(req.URL); got != "https://storage.example/blob" {
		t.Errorf("redactURL = %q", got)
	}
}
