"""Internal building blocks of the audit log; not a public interface."""
