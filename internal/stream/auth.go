package stream

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// Audience is the token audience agents request and the controller
// checks.
const Audience = "bulkhead"

// NodeNameExtra is the TokenReview user extra that carries the node a
// node- or pod-bound ServiceAccount token is bound to.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// ErrUnauthenticated is wrapped by errors for missing or invalid tokens.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrForbidden is wrapped by errors for authenticated callers that may not
// do what they ask.
var ErrForbidden = errors.New("forbidden")

// Identity is an authenticated caller.
type Identity struct {
	User   string
	Groups []string
	// Node is the node the token is bound to, empty for other tokens.
	Node string
}

// Authenticator checks bearer tokens.
type Authenticator interface {
	// AuthenticateAgent returns the identity of an agent token: it must be
	// valid for Audience, belong to an allowed user and be bound to a node.
	AuthenticateAgent(ctx context.Context, token string) (Identity, error)
	// AuthorizeUser checks a user's token (any audience the API server
	// accepts) and that the user may get the named resource of the
	// segmentation.bulkhead.dev group.
	AuthorizeUser(ctx context.Context, token, verb, resource string) (Identity, error)
}

// TokenReviewAuthenticator authenticates with the API server's
// TokenReview and authorizes with SubjectAccessReview. Positive agent
// results are cached for CacheTTL.
type TokenReviewAuthenticator struct {
	Reviews authnclient.TokenReviewInterface
	Access  authzclient.SubjectAccessReviewInterface
	// AgentUsers lists the usernames agents may have, e.g.
	// "system:serviceaccount:bulkhead-system:bulkhead-agent". Empty allows
	// every node-bound token.
	AgentUsers []string
	CacheTTL   time.Duration

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	id      Identity
	expires time.Time
}

var _ Authenticator = (*TokenReviewAuthenticator)(nil)

func (a *TokenReviewAuthenticator) review(ctx context.Context, token string, audiences []string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	tr, err := a.Reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("reviewing token: %w", err)
	}
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "token not authenticated"
		}
		return Identity{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	id := Identity{User: tr.Status.User.Username, Groups: tr.Status.User.Groups}
	if v := tr.Status.User.Extra[NodeNameExtra]; len(v) == 1 {
		id.Node = v[0]
	}
	return id, nil
}

// AuthenticateAgent implements Authenticator.
func (a *TokenReviewAuthenticator) AuthenticateAgent(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if c, ok := a.cache[key]; ok && time.Now().Before(c.expires) {
		a.mu.Unlock()
		return c.id, nil
	}
	a.mu.Unlock()
	id, err := a.review(ctx, token, []string{Audience})
	if err != nil {
		return id, err
	}
	if len(a.AgentUsers) > 0 && !slices.Contains(a.AgentUsers, id.User) {
		return id, fmt.Errorf("%w: user %q is not an agent identity (allowed: %s)", ErrForbidden, id.User, strings.Join(a.AgentUsers, ", "))
	}
	if id.Node == "" {
		return id, fmt.Errorf("%w: token of %q is not bound to a node (no %s in its TokenReview)", ErrForbidden, id.User, NodeNameExtra)
	}
	if a.CacheTTL > 0 {
		a.mu.Lock()
		if a.cache == nil {
			a.cache = map[[32]byte]cached{}
		}
		a.cache[key] = cached{id: id, expires: time.Now().Add(a.CacheTTL)}
		a.mu.Unlock()
	}
	return id, nil
}

// AuthorizeUser implements Authenticator.
func (a *TokenReviewAuthenticator) AuthorizeUser(ctx context.Context, token, verb, resource string) (Identity, error) {
	id, err := a.review(ctx, token, nil)
	if err != nil {
		return id, err
	}
	sar, err := a.Access.Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   id.User,
		Groups: id.Groups,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Group: "segmentation.bulkhead.dev", Resource: resource, Verb: verb,
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		return id, fmt.Errorf("reviewing access: %w", err)
	}
	if !sar.Status.Allowed {
		return id, fmt.Errorf("%w: user %q may not %s %s.segmentation.bulkhead.dev", ErrForbidden, id.User, verb, resource)
	}
	return id, nil
}
