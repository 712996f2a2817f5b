package kv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// tokenCheckGap is the least time between two token checks asked for by 403 answers.
const tokenCheckGap = 5 * time.Second

// run is the login loop: log in (retrying with exponential backoff), then hold the token
// (renewing it) until it must be replaced, and log in again.
func (s *Source) run(ctx context.Context) {
	defer close(s.done)
	backoff := s.opts.minBackoff
	for ctx.Err() == nil {
		s.m.setState(stateLoggingIn)
		sec, err := s.login(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.m.loginFailures.WithLabelValues(s.method).Inc()
			s.m.setState(stateBackoff)
			s.setErr(err)
			wait := jitter(backoff)
			s.log.Warn("vault login failed; retrying", "method", s.method, "error", err.Error(), "retry_in", wait.Round(time.Millisecond).String())
			if !sleep(ctx, wait) {
				return
			}
			backoff = min(2*backoff, s.opts.maxBackoff)
			continue
		}
		backoff = s.opts.minBackoff
		s.client.SetToken(sec.Auth.ClientToken)
		s.ownToken.Store(s.method != AuthToken)
		s.setErr(nil)
		if sec.Auth.Renewable && sec.Auth.LeaseDuration > 0 {
			s.m.setState(stateRenewing) // hold renews it
		} else {
			s.m.setState(stateLoggedIn) // a token that never expires, or one that lives out its TTL
		}
		if s.ready.CompareAndSwap(false, true) {
			close(s.readyCh)
		}
		s.log.Info("vault login succeeded", "method", s.method,
			"ttl", (time.Duration(sec.Auth.LeaseDuration) * time.Second).String(),
			"renewable", sec.Auth.Renewable, "policies", strings.Join(sec.Auth.Policies, ","))
		s.hold(ctx, sec)
	}
}

// login gets a token by the configured method. The error never holds a secret.
func (s *Source) login(ctx context.Context) (*api.Secret, error) {
	// A client of its own, without the old token: a login never sends a dead token.
	c, err := s.client.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearToken()
	a := s.opts.Auth
	var sec *api.Secret
	err = s.call("login", func() error {
		switch s.method {
		case AuthToken:
			tok, err := s.staticToken()
			if err != nil {
				return err
			}
			c.SetToken(tok)
			self, err := c.Auth().Token().LookupSelfWithContext(ctx)
			if err != nil {
				return fmt.Errorf("looking up the token: %w", s.loginErr(err))
			}
			if self == nil || self.Data == nil {
				return errors.New("looking up the token: empty answer")
			}
			ttl, _ := self.TokenTTL()
			renewable, _ := self.TokenIsRenewable()
			policies, _ := self.TokenPolicies()
			sec = &api.Secret{Auth: &api.SecretAuth{ClientToken: tok, Renewable: renewable,
				LeaseDuration: int(ttl / time.Second), Policies: policies}}
			return nil
		case AuthAppRole:
			roleID := a.RoleID
			if roleID == "" {
				b, err := os.ReadFile(a.RoleIDFile)
				if err != nil {
					return fmt.Errorf("keys.vault.auth.role_id_file: %w", err)
				}
				roleID = strings.TrimSpace(string(b))
				if roleID == "" {
					return fmt.Errorf("keys.vault.auth.role_id_file: %s is empty", a.RoleIDFile)
				}
			}
			if _, err := os.Stat(a.SecretIDFile); err != nil {
				return fmt.Errorf("keys.vault.auth.secret_id_file: %w", err)
			}
			m, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: a.SecretIDFile}, approle.WithMountPath(a.MountPath))
			if err != nil {
				return err
			}
			sec, err = m.Login(ctx, c)
			return s.loginErr(err)
		case AuthKubernetes:
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return fmt.Errorf("keys.vault.auth.token_file: %w", err)
			}
			jwt := strings.TrimSpace(string(b))
			if jwt == "" {
				return fmt.Errorf("keys.vault.auth.token_file: %s is empty", a.TokenFile)
			}
			m, err := kubernetes.NewKubernetesAuth(a.Role, kubernetes.WithServiceAccountToken(jwt), kubernetes.WithMountPath(a.MountPath))
			if err != nil {
				return err
			}
			sec, err = m.Login(ctx, c)
			return s.loginErr(err)
		}
		return fmt.Errorf("unknown auth method %q", s.method)
	})
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, errors.New("login answered without a token")
	}
	return sec, nil
}

// loginErr shortens a login failure to Vault's status and message (the api's error text holds
// the URL and the whole answer; neither holds the credential, but a short line reads better).
func (s *Source) loginErr(err error) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		where := "auth/" + s.opts.Auth.MountPath + "/login"
		if s.method == AuthToken {
			where = "auth/token/lookup-self"
		}
		return fmt.Errorf("%s: status %d: %s", where, re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err
}

// staticToken is the token of the token method: Auth.TokenFile's contents, else $VAULT_TOKEN.
func (s *Source) staticToken() (string, error) {
	if f := s.opts.Auth.TokenFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("keys.vault.auth.token_file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("keys.vault.auth.token_file: %s is empty", f)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(os.Getenv("VAULT_TOKEN")); tok != "" {
		return tok, nil
	}
	return "", errors.New("no token: set VAULT_TOKEN or keys.vault.auth.token_file")
}

// hold keeps the token of sec alive until it must be replaced: it renews a renewable token
// with a LifetimeWatcher and returns when renewal ends, when a non-renewable token nears its
// expiry, when a token check finds the token dead, or when ctx is done.
func (s *Source) hold(ctx context.Context, sec *api.Secret) {
	var done <-chan error
	var renewed <-chan *api.RenewOutput
	if sec.Auth.LeaseDuration > 0 {
		w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec})
		if err != nil {
			s.log.Warn("vault token renewal cannot start; logging in again", "error", err.Error())
			sleep(ctx, s.opts.minBackoff)
			return
		}
		go w.Start()
		defer w.Stop()
		done, renewed = w.DoneCh(), w.RenewCh()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			if err != nil {
				s.m.observe("renew", err, 0)
				s.log.Warn("vault token renewal failed; logging in again", "error", err.Error())
			} else {
				s.log.Info("vault token reached the end of its life; logging in again")
			}
			return
		case r := <-renewed:
			s.m.observe("renew", nil, 0)
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.log.Debug("vault token renewed", "ttl", (time.Duration(r.Secret.Auth.LeaseDuration) * time.Second).String())
			}
		case <-s.recheck:
			cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
			_, err := s.client.Auth().Token().LookupSelfWithContext(cctx)
			cancel()
			var re *api.ResponseError
			if errors.As(err, &re) && re.StatusCode == 403 {
				s.log.Warn("vault token no longer valid; logging in again")
				return
			}
		}
	}
}

// askTokenCheck asks the login loop to check its token (after a 403), at most once per
// tokenCheckGap.
func (s *Source) askTokenCheck() {
	now := time.Now().UnixNano()
	last := s.lastCheck.Load()
	if now-last < int64(tokenCheckGap) || !s.lastCheck.CompareAndSwap(last, now) {
		return
	}
	select {
	case s.recheck <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
