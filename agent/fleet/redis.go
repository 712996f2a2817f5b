package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions say how to reach the fleet's Redis: one server, a Redis Cluster through a
// comma-separated list of seed nodes, or the master a set of Redis Sentinels names (config:
// replay.redis, revocation.redis).
type RedisOptions struct {
	// Address is host:port, or a comma-separated list of Redis Cluster seed nodes, or with
	// SentinelMaster the sentinels' addresses (required).
	Address string
	// SentinelMaster is the name the sentinels know the master by: with it, the client asks
	// the sentinels at Address for the master and follows it through a failover.
	SentinelMaster string
	// SentinelPasswordFile holds the sentinels' own password (their requirepass), read when
	// the client is made; "" when they have none.
	SentinelPasswordFile string
	// Username and PasswordFile are the ACL credentials; the file is read at every new
	// connection, so a rotated password needs no restart.
	Username, PasswordFile string
	// TLS connects with TLS 1.2 or later, verifying the server against the system's roots
	// (SSL_CERT_FILE adds a private CA).
	TLS bool
	// TLSConfig replaces the default TLS settings (tests; nil: the defaults above).
	TLSConfig *tls.Config
	// KeyPrefix starts every key (default "tokenagent:").
	KeyPrefix string
}

// clientTimeouts are how a store's calls are bounded.
type clientTimeouts struct {
	// call bounds one call: dialing, reading, writing, waiting for a pooled connection.
	call time.Duration
	// retries is how often a failed call is tried again (0: never, for a call that is not
	// idempotent).
	retries int
}

// client checks o (its errors name the config section field) and returns a client that has not
// connected yet.
func (o *RedisOptions) client(field string, t clientTimeouts) (redis.UniversalClient, error) {
	if o.Address == "" {
		return nil, fmt.Errorf("%s.address: required", field)
	}
	addrs := strings.Split(o.Address, ",")
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%s.address: %q: %w", field, a, err)
		}
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "tokenagent:"
	}
	var creds func(context.Context) (string, string, error)
	if o.PasswordFile != "" {
		if _, err := readPassword(o.PasswordFile); err != nil {
			return nil, fmt.Errorf("%s.password_file: %w", field, err)
		}
		user, file := o.Username, o.PasswordFile
		creds = func(context.Context) (string, string, error) {
			p, err := readPassword(file)
			return user, p, err
		}
	}
	tlsCfg := o.TLSConfig
	if o.SentinelMaster != "" && (o.TLS || tlsCfg != nil) {
		return nil, fmt.Errorf("%s.tls: not supported with sentinel_master", field)
	}
	if o.SentinelMaster == "" && o.SentinelPasswordFile != "" {
		return nil, fmt.Errorf("%s.sentinel_password_file: needs sentinel_master", field)
	}
	if o.TLS && tlsCfg == nil {
		host, _, _ := net.SplitHostPort(addrs[0])
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	retries := t.retries
	if retries == 0 {
		retries = -1 // go-redis: 0 is its default (3), -1 is none
	}
	u := &redis.UniversalOptions{
		Addrs:    addrs,
		Username: o.Username, CredentialsProviderContext: creds,
		TLSConfig: tlsCfg,
		// Every call is bounded through its context, one dial attempt, and socket timeouts no
		// longer than a call.
		ContextTimeoutEnabled:    true,
		MaxRetries:               retries,
		DialerRetries:            1,
		DialTimeout:              t.call,
		ReadTimeout:              t.call,
		WriteTimeout:             t.call,
		PoolTimeout:              t.call,
		DisableIdentity:          true, // no CLIENT SETINFO round trip at each connection
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if o.SentinelMaster != "" {
		u.MasterName = o.SentinelMaster
		if o.SentinelPasswordFile != "" {
			p, err := readPassword(o.SentinelPasswordFile)
			if err != nil {
				return nil, fmt.Errorf("%s.sentinel_password_file: %w", field, err)
			}
			u.SentinelPassword = p
		}
		// The master's client: the sentinels tell it where the master is, and it drops its
		// connections when they announce another (+switch-master).
		return redis.NewFailoverClient(u.Failover()), nil
	}
	if len(addrs) == 1 {
		return redis.NewClient(u.Simple()), nil
	}
	// A cluster: the slot map is read again every second. go-redis reloads it on MOVED, but not
	// when a dead master refuses connections, so without this a failover would leave the
	// client dialling the dead node for a minute (its default interval).
	co := u.Cluster()
	co.ClusterStateReloadInterval = clusterReload
	return redis.NewClusterClient(co), nil
}

// clusterReload is how often a cluster client reads the slot map again.
const clusterReload = time.Second

func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", errors.New(path + " is empty")
	}
	return p, nil
}
