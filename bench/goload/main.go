// goload: load client for the peerlisten benchmark (standard library only).
//
// Modes:
//   handshake  each op = dial, TLS handshake, GET, read the response, close
//   keepalive  each worker keeps one connection and sends GET after GET
//   bulk       like keepalive, the response body is large (-path /bulk)
//   plain      each op = dial (no TLS), GET with Connection: close, read, close
//   idle       open -c connections (handshake + one request), print "ready",
//              then hold them for -d before closing them
// Without -resume no session cache is configured, so no handshake can resume.
// Prints one JSON object on stdout.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Mode       string  `json:"mode"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	Resumed    int64   `json:"resumed"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	Conns      int64   `json:"conns"`
	FirstError string  `json:"first_error,omitempty"`
}

var (
	addr     = flag.String("addr", "127.0.0.1:8443", "server address")
	mode     = flag.String("mode", "handshake", "handshake|keepalive|bulk|plain|idle")
	workers  = flag.Int("c", 8, "concurrent workers (idle: connections)")
	duration = flag.Duration("d", 3*time.Second, "duration")
	tlsVer   = flag.String("tls", "1.3", "TLS version: 1.3 or 1.2")
	resume   = flag.Bool("resume", false, "keep a session cache per worker")
	caFile   = flag.String("ca", "", "CA file (server verification)")
	certFile = flag.String("cert", "", "client certificate (mutual TLS)")
	keyFile  = flag.String("key", "", "client key")
	path     = flag.String("path", "/health", "request path")
	host     = flag.String("host", "localhost", "server name / Host header")
)

var (
	ops, errs, resumed, nbytes, conns int64
	firstErr                          atomic.Value
)

func fail(err error) {
	atomic.AddInt64(&errs, 1)
	firstErr.CompareAndSwap(nil, err.Error())
}

func baseConfig() *tls.Config {
	cfg := &tls.Config{ServerName: *host}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.RootCAs = pool
	} else {
		cfg.InsecureSkipVerify = true
	}
	if *certFile != "" {
		c, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	switch *tlsVer {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		// a TLS 1.2 client must offer P-256 as well for an ECDSA P-256 certificate
		cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	default:
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	}
	return cfg
}

// readResponse reads one HTTP/1.1 response with Content-Length; returns body size.
func readResponse(r *bufio.Reader) (int64, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "HTTP/1.") || len(line) < 12 || line[9:12] != "200" {
		return 0, fmt.Errorf("bad status: %q", strings.TrimSpace(line))
	}
	clen := int64(-1)
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		if i := strings.IndexByte(h, ':'); i > 0 && strings.EqualFold(h[:i], "content-length") {
			clen, _ = strconv.ParseInt(strings.TrimSpace(h[i+1:]), 10, 64)
		}
	}
	if clen < 0 {
		return 0, errors.New("no content-length")
	}
	n, err := io.CopyN(io.Discard, r, clen)
	return n, err
}

func request(close bool) []byte {
	c := "keep-alive"
	if close {
		c = "close"
	}
	return []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *host + "\r\nConnection: " + c + "\r\n\r\n")
}

func handshakeWorker(deadline time.Time, cfg *tls.Config, wg *sync.WaitGroup) {
	defer wg.Done()
	req := request(true)
	d := net.Dialer{Timeout: 10 * time.Second}
	for time.Now().Before(deadline) {
		raw, err := d.Dial("tcp", *addr)
		if err != nil {
			fail(err)
			time.Sleep(time.Millisecond)
			continue
		}
		var c net.Conn = raw
		if *mode != "plain" {
			tc := tls.Client(raw, cfg)
			if err := tc.Handshake(); err != nil {
				raw.Close()
				fail(err)
				continue
			}
			if tc.ConnectionState().DidResume {
				atomic.AddInt64(&resumed, 1)
			}
			c = tc
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			c.Close()
			fail(err)
			continue
		}
		n, err := readResponse(bufio.NewReader(c))
		c.Close()
		if err != nil {
			fail(err)
			continue
		}
		atomic.AddInt64(&nbytes, n)
		atomic.AddInt64(&ops, 1)
	}
}

func keepaliveWorker(deadline time.Time, cfg *tls.Config, wg *sync.WaitGroup) {
	defer wg.Done()
	req := request(false)
	for time.Now().Before(deadline) {
		raw, err := net.DialTimeout("tcp", *addr, 10*time.Second)
		if err != nil {
			fail(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			fail(err)
			continue
		}
		atomic.AddInt64(&conns, 1)
		r := bufio.NewReaderSize(tc, 64<<10)
		for time.Now().Before(deadline) {
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err = tc.Write(req); err != nil {
				break
			}
			n, err2 := readResponse(r)
			if err2 != nil {
				err = err2
				break
			}
			atomic.AddInt64(&nbytes, n)
			atomic.AddInt64(&ops, 1)
		}
		tc.Close()
		if err != nil {
			fail(err)
		}
	}
}

func idle(cfg *tls.Config) {
	req := request(false)
	var held []net.Conn
	for i := 0; i < *workers; i++ {
		raw, err := net.DialTimeout("tcp", *addr, 10*time.Second)
		if err != nil {
			fail(err)
			continue
		}
		tc := tls.Client(raw, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			raw.Close()
			fail(err)
			continue
		}
		if _, err := tc.Write(req); err != nil {
			tc.Close()
			fail(err)
			continue
		}
		if _, err := readResponse(bufio.NewReader(tc)); err != nil {
			tc.Close()
			fail(err)
			continue
		}
		tc.SetDeadline(time.Time{})
		held = append(held, tc)
		atomic.AddInt64(&ops, 1)
	}
	fmt.Println("ready", len(held))
	time.Sleep(*duration)
	for _, c := range held {
		c.Close()
	}
}

func main() {
	flag.Parse()
	cfg := baseConfig()
	start := time.Now()
	deadline := start.Add(*duration)
	if *mode == "idle" {
		idle(cfg)
	} else {
		var wg sync.WaitGroup
		for i := 0; i < *workers; i++ {
			wg.Add(1)
			wcfg := cfg.Clone()
			if *resume {
				wcfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			}
			switch *mode {
			case "handshake", "plain":
				go handshakeWorker(deadline, wcfg, &wg)
			case "keepalive", "bulk":
				go keepaliveWorker(deadline, wcfg, &wg)
			default:
				fmt.Fprintln(os.Stderr, "unknown mode", *mode)
				os.Exit(2)
			}
		}
		wg.Wait()
	}
	res := result{Mode: *mode, Ops: ops, Errors: errs, Resumed: resumed, Bytes: nbytes,
		Seconds: time.Since(start).Seconds(), Conns: conns}
	if v := firstErr.Load(); v != nil {
		res.FirstError = v.(string)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
