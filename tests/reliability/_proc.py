"""Process-table helpers of the reliability tests (Linux /proc)."""
import os


def alive(pid):
    r"""Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def children(pid):
    r"""The ids of the live processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != 'Z':
                out.append(int(entry))
    return out
