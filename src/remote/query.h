// Query strings of the registry protocol: token requests (service, scope)
// and upload URLs, whose Location may already carry a query of its own.
#pragma once

#include <string>
#include <string_view>

#include "ovbd/io/http_client.h"

namespace ovbd::remote {

// RFC 3986 percent-encoding of everything but the unreserved characters.
std::string PercentEncode(std::string_view s);
// Adds "name=value" (value percent-encoded) to the URL's query: after '?'
// if it has none yet, else after '&'.
void AppendQuery(Url* url, std::string_view name, std::string_view value);

}  // namespace ovbd::remote
