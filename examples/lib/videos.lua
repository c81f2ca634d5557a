--- The video service's API as the content-warnings examples call it.
-- The same functions serve the synchronous and the asynchronous versions:
-- outside a task a session's request blocks, inside a task it yields.
-- Sessions are made with `base_url` = the server's URL.
local M = {}

--- The first n video ids.
function M.get_video_ids(session, n)
  return session:get("/videos", { params = { n = n } }):raise_for_status():json()
end

--- One video (id, title, description, upload_date, views, warnings).
function M.get_video(video_id, session)
  return session:get("/videos/" .. video_id):raise_for_status():json()
end

--- A video's transcript (a string).
function M.get_transcript(video_id, session)
  return session:get("/videos/" .. video_id .. "/transcript"):raise_for_status():json()
end

--- Merge data into the video; the server answers "success".
function M.patch_video(video_id, session, data)
  return session:patch("/videos/" .. video_id, { json = data }):raise_for_status():json()
end

return M
