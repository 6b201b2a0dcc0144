package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
)

// Labels the StatefulSet controller puts on its pods.
const (
	StatefulSetPodNameLabel  = "statefulset.kubernetes.io/pod-name"
	StatefulSetPodIndexLabel = "apps.kubernetes.io/pod-index"
)

// ApplyStatefulSet plays the StatefulSet controller for one StatefulSet of
// the running lab: it creates or updates the StatefulSet, records the
// current template as a ControllerRevision "<name>-<hash>" owned by it,
// and makes pods "<name>-0" … "<name>-<replicas-1>" owned by the
// StatefulSet, labelled with the template's labels plus
// controller-revision-hash, statefulset.kubernetes.io/pod-name and
// apps.kubernetes.io/pod-index. A pod of an older revision is replaced
// under the same name (a rollout; its address may change); ordinals at
// or above replicas are removed (a scale-down). Services and
// EndpointSlices are then resynced.
func ApplyStatefulSet(ctx context.Context, dir string, s *appsv1.StatefulSet) (*appsv1.StatefulSet, error) {
	key := s.Namespace + "/" + s.Name
	if s.Spec.Selector == nil || len(s.Spec.Selector.MatchLabels) == 0 {
		return nil, fmt.Errorf("statefulset %s: spec.selector.matchLabels is required", key)
	}
	if !labels.SelectorFromSet(s.Spec.Selector.MatchLabels).Matches(labels.Set(s.Spec.Template.Labels)) {
		return nil, fmt.Errorf("statefulset %s: spec.template.metadata.labels do not match spec.selector", key)
	}
	replicas := int32(1)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	if replicas < 0 {
		return nil, fmt.Errorf("statefulset %s: spec.replicas %d is negative", key, replicas)
	}
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, cs, s.Namespace, nil); err != nil {
		return nil, fmt.Errorf("statefulset %s: namespace: %w", key, err)
	}
	cur, err := cs.AppsV1().StatefulSets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = cs.AppsV1().StatefulSets(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
	case err == nil:
		cur.Spec.Replicas, cur.Spec.Template = s.Spec.Replicas, s.Spec.Template
		cur.Labels = s.Labels
		cur, err = cs.AppsV1().StatefulSets(s.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("statefulset %s: %w", key, err)
	}
	revision := cur.Name + "-" + PodTemplateHash(cur.Spec.Template)
	if err := ensureRevision(ctx, dir, cur, revision); err != nil {
		return nil, err
	}
	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i := 0; i < int(replicas); i++ {
		name := cur.Name + "-" + strconv.Itoa(i)
		if pp, ok := st.Plan.Pod(cur.Namespace + "/" + name); ok {
			if pp.Labels[appsv1.ControllerRevisionHashLabelKey] == revision {
				continue
			}
			if err := RemovePod(ctx, dir, pp.Key()); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		l := copyLabels(cur.Spec.Template.Labels)
		if l == nil {
			l = map[string]string{}
		}
		l[appsv1.ControllerRevisionHashLabelKey] = revision
		l[StatefulSetPodNameLabel] = name
		l[StatefulSetPodIndexLabel] = strconv.Itoa(i)
		spec := *cur.Spec.Template.Spec.DeepCopy()
		spec.Hostname, spec.Subdomain = name, cur.Spec.ServiceName
		if _, err := AddPod(ctx, dir, PodInput{Namespace: cur.Namespace, Name: name, Labels: l, Spec: spec}, 0,
			[]metav1.OwnerReference{controllerRef("apps/v1", "StatefulSet", cur.ObjectMeta)}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pp := range st.Plan.Pods {
		if pp.Namespace != cur.Namespace || len(pp.Owners) == 0 || pp.Owners[0].UID != cur.UID {
			continue
		}
		if i, err := strconv.Atoi(pp.Labels[StatefulSetPodIndexLabel]); err == nil && i >= int(replicas) {
			errs = append(errs, RemovePod(ctx, dir, pp.Key()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cur, fmt.Errorf("statefulset %s: %w", key, err)
	}
	return cur, SyncServices(ctx, dir)
}

// ensureRevision records the StatefulSet's current template as a
// ControllerRevision named revision, owned by the StatefulSet.
func ensureRevision(ctx context.Context, dir string, s *appsv1.StatefulSet, revision string) error {
	cs, err := labClientset(dir)
	if err != nil {
		return err
	}
	revs, err := cs.AppsV1().ControllerRevisions(s.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("statefulset %s/%s: listing controllerrevisions: %w", s.Namespace, s.Name, err)
	}
	var last int64
	for _, r := range revs.Items {
		if ref := metav1.GetControllerOf(&r); ref != nil && ref.UID == s.UID {
			if r.Name == revision {
				return nil
			}
			last = max(last, r.Revision)
		}
	}
	raw, err := json.Marshal(map[string]any{"spec": map[string]any{"template": s.Spec.Template}})
	if err != nil {
		return fmt.Errorf("statefulset %s/%s: revision data: %w", s.Namespace, s.Name, err)
	}
	_, err = cs.AppsV1().ControllerRevisions(s.Namespace).Create(ctx, &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: revision, Labels: copyLabels(s.Spec.Template.Labels),
			OwnerReferences: []metav1.OwnerReference{controllerRef("apps/v1", "StatefulSet", s.ObjectMeta)}},
		Data:     runtime.RawExtension{Raw: raw},
		Revision: last + 1,
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("statefulset %s/%s: controllerrevision %s: %w", s.Namespace, s.Name, revision, err)
	}
	return nil
}

// ApplyCronJob creates or updates a CronJob of the running lab. The lab
// has no clock-driven controller: RunCronJob starts one scheduled run.
func ApplyCronJob(ctx context.Context, dir string, cj *batchv1.CronJob) (*batchv1.CronJob, error) {
	key := cj.Namespace + "/" + cj.Name
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, cs, cj.Namespace, nil); err != nil {
		return nil, fmt.Errorf("cronjob %s: namespace: %w", key, err)
	}
	cur, err := cs.BatchV1().CronJobs(cj.Namespace).Get(ctx, cj.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = cs.BatchV1().CronJobs(cj.Namespace).Create(ctx, cj, metav1.CreateOptions{})
	case err == nil:
		cur.Spec, cur.Labels = cj.Spec, cj.Labels
		cur, err = cs.BatchV1().CronJobs(cj.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("cronjob %s: %w", key, err)
	}
	return cur, nil
}

// RunCronJob plays the CronJob controller for one scheduled time: it
// creates the Job "<cronjob>-<minutes since the epoch>" from the
// CronJob's jobTemplate, owned by the CronJob and annotated with
// batch.kubernetes.io/cronjob-scheduled-timestamp, and runs it (RunJob).
func RunCronJob(ctx context.Context, dir, namespace, name string, scheduled time.Time) (*batchv1.Job, error) {
	key := namespace + "/" + name
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	cj, err := cs.BatchV1().CronJobs(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("cronjob %s: %w", key, err)
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name + "-" + strconv.FormatInt(scheduled.Unix()/60, 10),
			Labels:          copyLabels(cj.Spec.JobTemplate.Labels),
			Annotations:     map[string]string{batchv1.CronJobScheduledTimestampAnnotation: scheduled.UTC().Format(time.RFC3339)},
			OwnerReferences: []metav1.OwnerReference{controllerRef("batch/v1", "CronJob", cj.ObjectMeta)},
		},
		Spec: *cj.Spec.JobTemplate.Spec.DeepCopy(),
	}
	return RunJob(ctx, dir, job)
}

// RunJob plays the Job controller for a Job of the running lab: it
// creates the Job (the API server generates its selector and the
// batch.kubernetes.io/controller-uid and job-name labels of its template)
// unless it exists, and starts spec.parallelism (default 1) pods
// "<job>-<random>" owned by it with the template's labels. The pods run
// until RemovePod; the lab does not complete Jobs.
func RunJob(ctx context.Context, dir string, job *batchv1.Job) (*batchv1.Job, error) {
	key := job.Namespace + "/" + job.Name
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, cs, job.Namespace, nil); err != nil {
		return nil, fmt.Errorf("job %s: namespace: %w", key, err)
	}
	cur, err := cs.BatchV1().Jobs(job.Namespace).Create(ctx, job, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return cs.BatchV1().Jobs(job.Namespace).Get(ctx, job.Name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", key, err)
	}
	n := int32(1)
	if cur.Spec.Parallelism != nil {
		n = *cur.Spec.Parallelism
	}
	var errs []error
	for i := int32(0); i < n; i++ {
		name := cur.Name + "-" + utilrand.String(5)
		if _, err := AddPod(ctx, dir, PodInput{Namespace: cur.Namespace, Name: name, Labels: cur.Spec.Template.Labels, Spec: cur.Spec.Template.Spec}, 0,
			[]metav1.OwnerReference{controllerRef("batch/v1", "Job", cur.ObjectMeta)}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cur, fmt.Errorf("job %s: %w", key, err)
	}
	return cur, SyncServices(ctx, dir)
}
