/* Artifacts: a node's globs matched under its workspace (a match whose real location, every
 * symbolic link resolved, is outside the workspace is skipped and said so in the node's log),
 * then each file declared (name, size, SHA-256), sent in chunks and committed. When the
 * connection drops, the upload is declared again on the next one and goes on from the offset
 * the coordinator holds. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner.h"

void node_uploaded(node_t *node, char *failure);

static int inside(const char *path, const char *root) {
    size_t n = strlen(root);
    return strncmp(path, root, n) == 0 && (path[n] == '/' || (n > 0 && root[n - 1] == '/'));
}

void artifacts_match(node_t *node) {
    const char *workspace = node->job->workspace;
    char *root = realpath(workspace, NULL);
    if (!root) root = xstrdup(workspace);
    for (size_t p = 0; p < node->spec->n_artifacts; p++) {
        char *pattern = xasprintf("%s/%s", workspace, node->spec->artifacts[p]);
        glob_t found;
        if (glob(pattern, 0, NULL, &found) == 0) {
            for (size_t i = 0; i < found.gl_pathc; i++) {
                const char *path = found.gl_pathv[i];
                if (strlen(path) <= strlen(workspace) + 1) continue;
                const char *name = path + strlen(workspace) + 1;
                int seen = 0;
                for (size_t m = 0; m < node->n_matches && !seen; m++) seen = strcmp(node->matches[m], name) == 0;
                if (seen) continue;
                char *real = realpath(path, NULL);
                if (!real) continue;
                if (!inside(real, root)) {
                    logmsg(LOG_WARNING, "artifact outside the workspace skipped name=%s resolved=%s", name, real);
                    char *line = xasprintf("heddle: artifact %s skipped: it leads to %s, outside the workspace\n", name, real);
                    logstream_append(node, (const uint8_t *)line, strlen(line));
                    free(line);
                    free(real);
                    continue;
                }
                struct stat st;
                if (stat(real, &st) == 0 && S_ISREG(st.st_mode)) {
                    char **matches = realloc(node->matches, (node->n_matches + 1) * sizeof *matches);
                    if (!matches) abort();
                    node->matches = matches;
                    node->matches[node->n_matches++] = xstrdup(name);
                }
                free(real);
            }
        }
        globfree(&found);
        free(pattern);
    }
    free(root);
}

static void upload_failed(node_t *node, const char *why) {
    upload_t *u = &node->upload;
    char *failure = xasprintf("node '%s': artifact %s failed to upload: %s", node->spec->name, u->name, why);
    if (u->fd >= 0) close(u->fd);
    u->fd = -1;
    u->active = 0;
    node_uploaded(node, failure);
}

static void on_declared(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message) {
    node_t *node = request->node;
    upload_t *u = &node->upload;
    if (code != 0 || !response || response->body_case != HEDDLE__V1__ENVELOPE__BODY_ARTIFACT_DECLARED) {
        upload_failed(node, code != 0 ? message : "the coordinator did not accept it");
        return;
    }
    if (response->artifact_declared->committed_offset > u->size) {
        upload_failed(node, "the coordinator holds more bytes than the file has");
        return;
    }
    u->upload_id = response->artifact_declared->upload_id;
    u->offset = response->artifact_declared->committed_offset;
    u->generation = R.link.generation;
    u->phase = UP_SENDING;
    artifacts_step(node);
}

static void on_committed(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message) {
    node_t *node = request->node;
    upload_t *u = &node->upload;
    if (code == -1 || code == HEDDLE__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE) {
        /* The connection ended, or the coordinator's storage is full and the upload is gone:
         * declared again (the declare waits out the full disk, and says from where). */
        u->phase = UP_DECLARE;
        return;
    }
    if (code != 0 || !response || response->body_case != HEDDLE__V1__ENVELOPE__BODY_ARTIFACT_COMMITTED) {
        upload_failed(node, code != 0 ? message : "the coordinator did not commit it");
        return;
    }
    logmsg(LOG_INFO, "artifact uploaded name=%s artifact.id=%llu", u->name,
           (unsigned long long)response->artifact_committed->artifact_id);
    close(u->fd);
    u->fd = -1;
    free(u->name);
    u->name = NULL;
    u->active = 0;
    u->next++;
    artifacts_step(node);
}

static int open_next(node_t *node) {
    upload_t *u = &node->upload;
    const char *workspace = node->job->workspace;
    u->name = xstrdup(node->matches[u->next]);
    char *path = xasprintf("%s/%s", workspace, u->name);
    u->fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    u->active = 1;
    if (u->fd < 0) {
        upload_failed(node, strerror(errno));
        return -1;
    }
    /* What was opened, not what the name led to when matched: a link swapped in between
     * cannot take the upload out of the workspace. */
    char link[64], opened[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", u->fd);
    ssize_t n = readlink(link, opened, sizeof opened - 1);
    char *root = realpath(workspace, NULL);
    int ok = n > 0 && root;
    if (ok) {
        opened[n] = 0;
        ok = inside(opened, root);
    }
    free(root);
    if (!ok) {
        upload_failed(node, "it now leads outside the workspace");
        return -1;
    }
    if (sha256_file(u->fd, &u->size, u->sha256) != 0) {
        upload_failed(node, strerror(errno));
        return -1;
    }
    u->phase = UP_DECLARE;
    return 0;
}

void artifacts_step(node_t *node) {
    upload_t *u = &node->upload;
    job_t *job = node->job;
    if (node->phase != NODE_UPLOADING) return;
    if (!u->active) {
        if (u->next >= node->n_matches) {
            node_uploaded(node, NULL);
            return;
        }
        if (open_next(node) != 0) return;
    }
    if (u->phase == UP_DECLARE) {
        Heddle__V1__JobRef ref = job_ref(job);
        Heddle__V1__ArtifactDeclare declare = HEDDLE__V1__ARTIFACT_DECLARE__INIT;
        declare.job = &ref;
        declare.name = u->name;
        declare.size = u->size;
        declare.sha256.data = u->sha256;
        declare.sha256.len = 32;
        Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
        envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_ARTIFACT_DECLARE;
        envelope.artifact_declare = &declare;
        u->phase = UP_DECLARING;
        link_request(&envelope, on_declared, job, node);
        return;
    }
    if (u->phase != UP_SENDING) return;
    if (!link_ready() || R.link.generation != u->generation) {
        u->phase = UP_DECLARE;
        return;
    }
    size_t chunk = R.link.max_chunk > 16384 ? R.link.max_chunk : 16384;
    if (chunk > R.link.max_frame / 2 && R.link.max_frame >= 32768) chunk = R.link.max_frame / 2;
    static uint8_t block[4u << 20];
    if (chunk > sizeof block) chunk = sizeof block;
    while (u->offset < u->size && link_has_room()) {
        size_t want = u->size - u->offset < chunk ? (size_t)(u->size - u->offset) : chunk;
        ssize_t n = pread(u->fd, block, want, (off_t)u->offset);
        if (n <= 0) {
            upload_failed(node, n == 0 ? "the file became shorter while it was uploaded" : strerror(errno));
            return;
        }
        Heddle__V1__JobRef ref = job_ref(job);
        Heddle__V1__ArtifactChunk piece = HEDDLE__V1__ARTIFACT_CHUNK__INIT;
        piece.job = &ref;
        piece.upload_id = u->upload_id;
        piece.offset = u->offset;
        piece.data.data = block;
        piece.data.len = (size_t)n;
        Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
        envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_ARTIFACT_CHUNK;
        envelope.artifact_chunk = &piece;
        link_send_oneway(&envelope);
        u->offset += (uint64_t)n;
    }
    if (u->offset < u->size) return;
    Heddle__V1__JobRef ref = job_ref(job);
    Heddle__V1__ArtifactCommit commit = HEDDLE__V1__ARTIFACT_COMMIT__INIT;
    commit.job = &ref;
    commit.upload_id = u->upload_id;
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_ARTIFACT_COMMIT;
    envelope.artifact_commit = &commit;
    u->phase = UP_COMMITTING;
    request_t *request = link_request(&envelope, on_committed, job, node);
    request->resend = 0;
}

void artifacts_on_connect(node_t *node) {
    upload_t *u = &node->upload;
    if (node->phase == NODE_UPLOADING && u->active && u->phase == UP_SENDING) u->phase = UP_DECLARE;
}
