// What a registry's refusal means, as a Status: its HTTP status mapped to
// a category and errno, with the first error of its JSON body (code and
// message, bounded and with control bytes masked) to say why.
#pragma once

#include <string>

#include "ovbd/io/http_client.h"
#include "ovbd/io/status.h"

namespace ovbd::remote {

// `what` names the operation and object ("HEAD registry://r/a@sha256:…").
//   400 -> InvalidArgument; 401, 403 -> EACCES; 404 -> NotFound;
//   405 -> EPERM; 416 -> EINVAL; 429 -> EAGAIN; 5xx -> EIO; else EPROTO.
Status ResponseError(const std::string& what, const ClientResponse& resp);

// Whether a failed exchange is worth repeating: a transport failure other
// than one that would fail again the same way (a refused certificate, a
// redirect loop, a response too large, a bad URL), or a 5xx or 429.
bool Retryable(const Status& s);
bool Retryable(const ClientResponse& resp);

}  // namespace ovbd::remote
