//! The speaker's Kubernetes side: watches and ServiceL2Status/Event writes (issue 11, being built).
