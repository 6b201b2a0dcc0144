package policy

import "fmt"

// FieldError is an invalid field of one object. The object is then not in
// the model.
type FieldError struct {
	Kind      string
	Namespace string
	Name      string
	// Field is the path of the bad field, e.g.
	// "spec.ingress[0].from[1].ipBlock.cidr".
	Field   string
	Message string
}

// Object names the object, e.g. "NetworkPolicy default/web" or "Zone pci".
func (e *FieldError) Object() string {
	if e.Namespace == "" {
		return e.Kind + " " + e.Name
	}
	return e.Kind + " " + e.Namespace + "/" + e.Name
}

// Detail is the field and the message, without the object.
func (e *FieldError) Detail() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func (e *FieldError) Error() string { return e.Object() + ": " + e.Detail() }

type objCtx struct{ kind, ns, name string }

func (o objCtx) errf(field, format string, args ...any) *FieldError {
	return &FieldError{Kind: o.kind, Namespace: o.ns, Name: o.name, Field: field, Message: fmt.Sprintf(format, args...)}
}
